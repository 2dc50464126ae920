"""embed robustness: reproducible random weights, bounded memory on sparse rasters, prompt resumable stops."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

from rasterlearn.embed import Backbone, embed, list_sessions
from rasterlearn.weights import seeded_init, state_digest
from tests.test_embed import PoolNet, pool_backbone

ROOT = Path(__file__).resolve().parents[1]


def test_state_digest_names_the_weights_and_seeded_init_restores_rng():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b) and len(state_digest(a)) == 16
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert state_digest(a) != state_digest(b)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded_init(7):
        x = torch.rand(2)
    with seeded_init(7):
        assert torch.equal(torch.rand(2), x)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched


def test_random_weights_are_seeded_and_recorded(make_raster, tmp_path, caplog):
    data = np.random.default_rng(0).uniform(0, 255, (3, 64, 64)).astype("float32")
    r = make_raster(data)
    outs = []
    with caplog.at_level(logging.WARNING, logger="rasterlearn.embed"):
        for i, seed in enumerate((7, 7, 8)):
            res = embed(
                r,
                "vit_small_patch16_224",
                pretrained=False,
                seed=seed,
                model_kwargs={"depth": 1},
                size=32,
                output=tmp_path / f"f{i}.tif",
                device="cpu",
                cache_dir=tmp_path / "sessions",
            )
            outs.append(res)
    assert "RANDOM WEIGHTS" in caplog.text
    with (
        rasterio.open(outs[0].path) as d0,
        rasterio.open(outs[1].path) as d1,
        rasterio.open(outs[2].path) as d2,
    ):
        a0, a1, a2 = d0.read(), d1.read(), d2.read()
        tags = d0.tags()
    np.testing.assert_array_equal(a0, a1)
    assert not np.allclose(a0, a2)
    params = json.loads((outs[0].session / "parameters.json").read_text())
    assert params["seed"] == 7 and len(params["weights_sha256"]) == 16
    assert (
        tags["rasterlearn_weights_sha256"] == params["weights_sha256"]
        and tags["rasterlearn_random_weights"] == "true"
    )
    assert tags["rasterlearn_seed"] == "7"
    assert outs[0].session_id == outs[1].session_id != outs[2].session_id  # the digest is in the session hash


def test_cli_embed_no_pretrained_seed_twice_gives_identical_files(make_raster, tmp_path):
    from rasterlearn.cli import main

    r = make_raster(np.random.default_rng(0).integers(0, 255, (3, 448, 448)).astype("uint8"))
    args = ["embed", str(r), "--model", "vit_small_patch16_224", "--no-pretrained", "--seed", "7"]
    args += ["--size", "224", "--stride", "224", "--device", "cpu"]
    assert main(["-q", *args, "-o", str(tmp_path / "a.tif")]) == 0
    assert main(["-q", *args, "-o", str(tmp_path / "b.tif"), "--no-resume"]) == 0
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


class _Counting(PoolNet):
    def __init__(self, stride: int) -> None:
        super().__init__(stride)
        self.tiles = 0

    def forward_intermediates(self, x, indices=None, intermediates_only=True, **kw):
        self.tiles += x.shape[0]
        return super().forward_intermediates(x, indices, intermediates_only, **kw)


def _sparse_raster(path: Path, n: int) -> Path:
    prof = {
        "driver": "GTiff",
        "width": n,
        "height": n,
        "count": 3,
        "dtype": "uint8",
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "sparse_ok": True,
        "crs": "EPSG:32633",
        "transform": Affine(1.0, 0, 500_000.0, 0, -1.0, 4_000_000.0),
    }
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(np.full((3, 300, 300), 100, "uint8"), window=Window(1000, 1000, 300, 300))
    return path


def test_embed_sparse_huge_raster_stays_bounded_and_skips_empty_tiles(tmp_path):
    psutil = pytest.importorskip("psutil")
    src = _sparse_raster(tmp_path / "sparse.tif", 20_000)
    net = _Counting(16)
    bb = Backbone(net, "pool", "cnn", 0, 16, 3, None)
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        # an ambient GDAL cache of 8 GiB (in bytes): embed must bound it itself (else it grows by the raster, 1.2 GB)
        with rasterio.Env(GDAL_CACHEMAX=8 * 2**30):
            res = embed(
                src,
                "pool",
                backbone=bb,
                size=224,
                normalization="none",
                output=tmp_path / "f.tif",
                device="cpu",
                cache_dir=tmp_path / "sessions",
            )
    finally:
        done.set()
        t.join()
    grown_mib = (peak[0] - start) / 2**20
    assert res.tiles == 90 * 90 and res.tiles_skipped == res.tiles - 4
    assert net.tiles == 4  # only the tiles touching the valid patch went through the model
    assert grown_mib < 500, f"embed grew by {grown_mib:.0f} MiB on a sparse 20000 x 20000 raster"
    with rasterio.open(res.path) as ds:
        assert ds.width == ds.height == 1250
        block = ds.read(1, window=Window(60, 60, 24, 24))
    assert np.isfinite(block).sum() > 0 and np.isnan(ds.nodata)


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from tests.test_embed import pool_backbone
from rasterlearn.embed import embed
from tests.logcapture import rasterlearn_logs  # noqa: F401
def progress(n):
    print("tiles", n, flush=True)
embed({src!r}, "pool", backbone=pool_backbone(1, 4), size=16, normalization="none", output={out!r},
      device="cpu", cache_dir={cache!r}, batch_size=4, pause_s=0.05, memory_mb=0.001, progress=progress)
print("finished", flush=True)
"""


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, marks=pytest.mark.slow, id="SIGINT"),
        pytest.param(signal.SIGTERM, marks=pytest.mark.slow, id="SIGTERM"),
    ],
)
def test_embed_stops_promptly_on_signal_and_resumes(make_raster, tmp_path, sig):
    data = np.random.default_rng(3).uniform(1, 100, (1, 512, 64)).astype("float32")
    src = make_raster(data, nodata=0.0)
    out, cache = tmp_path / "f.tif", tmp_path / "sessions"
    code = _CHILD.format(root=str(ROOT), src=str(src), out=str(out), cache=str(cache))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for seen, _line in enumerate(proc.stdout, start=1):  # wait until a few batches have been merged
        if seen >= 20:
            break
    t0 = time.perf_counter()
    proc.send_signal(sig)
    rest = proc.stdout.read()
    rc = proc.wait(timeout=30)
    stopped_s = time.perf_counter() - t0
    assert "finished" not in rest and rc != 0
    assert stopped_s < 5, f"took {stopped_s:.1f} s to stop after {sig.name}"
    (entry,) = list_sessions(cache).values()
    assert entry["status"] == "interrupted" and not out.exists()
    res = embed(
        src,
        "pool",
        backbone=pool_backbone(1, 4),
        size=16,
        normalization="none",
        output=out,
        device="cpu",
        cache_dir=cache,
        batch_size=4,
        memory_mb=0.001,
    )
    assert res.resumed
    ref = embed(
        src,
        "pool",
        backbone=pool_backbone(1, 4),
        size=16,
        normalization="none",
        output=tmp_path / "ref.tif",
        device="cpu",
        cache_dir=tmp_path / "ref_sessions",
        batch_size=4,
        memory_mb=0.001,
    )
    with rasterio.open(res.path) as a, rasterio.open(ref.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_sigterm_during_embed_stops_it_resumably(make_raster, tmp_path):
    """SIGTERM becomes KeyboardInterrupt inside embed (in-process; the subprocess tests above are slow)."""
    data = np.random.default_rng(4).uniform(1, 100, (1, 256, 64)).astype("float32")
    src = make_raster(data, nodata=0.0)
    kw = {
        "backbone": pool_backbone(1, 4),
        "size": 16,
        "normalization": "none",
        "device": "cpu",
        "batch_size": 4,
        "memory_mb": 0.001,
        "cache_dir": tmp_path / "s",
    }
    calls = []

    def term(n: int) -> None:
        calls.append(n)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler interrupts this sleep

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        embed(src, "pool", output=tmp_path / "f.tif", progress=term, **kw)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again
    (entry,) = list_sessions(tmp_path / "s").values()
    assert entry["status"] == "interrupted" and len(calls) == 10
    res = embed(src, "pool", output=tmp_path / "f.tif", **kw)
    ref = embed(src, "pool", output=tmp_path / "ref.tif", **{**kw, "cache_dir": tmp_path / "r"})
    assert res.resumed
    with rasterio.open(res.path) as a, rasterio.open(ref.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())
