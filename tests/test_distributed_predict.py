"""Block-level predict of one raster on dask.distributed: byte-identical to local, resumable across executors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from rasterlearn.errors import JobCancelledError
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_raster
from tests.test_predict import _meta, _package

distributed = pytest.importorskip("distributed", reason="the dask extra (distributed) is not installed")

# small windows, batches spanning window rows, column stripes (memory_mb), TTA and float probabilities
KW: dict[str, Any] = {
    "window": 32,
    "overlap": 0.25,
    "batch_size": 3,
    "blocksize": 32,
    "memory_mb": 0.01,
    "tta": "hflip",
    "prob_dtype": "float32",
    "device": "cpu",
}


@pytest.fixture()
def raster(make_raster) -> Path:
    rng = np.random.default_rng(11)
    data = rng.integers(1, 250, (3, 96, 160)).astype("uint8")
    data[:, :40, :40] = 0  # a nodata corner: its windows are skipped on every executor
    return make_raster(data, nodata=0)


@pytest.fixture(scope="module")
def model() -> Any:
    import torch

    torch.manual_seed(3)
    # torch's own layers: a worker unpickles the model without importing the test modules
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 3, padding=1)
    ).eval()
    meta = _meta(["r", "g", "b"], 3, chip=32, norm=Normalization("zscore", (120.0,) * 3, (50.0,) * 3))
    return net, meta


def _tags(ds: Any) -> dict[str, Any]:
    """Tags of an output without the (output-neutral) inference record."""
    return {k: v for k, v in ds.tags().items() if k != "inference"}


def _assert_same(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        np.testing.assert_array_equal(x.read(), y.read())
        assert (x.profile["dtype"], x.transform, x.crs, x.shape) == (
            y.profile["dtype"],
            y.transform,
            y.crs,
            y.shape,
        )
        np.testing.assert_equal(x.nodata, y.nodata)
        assert _tags(x) == _tags(y)


def _run(model: Any, raster: Path, out: Path, **kw: Any) -> Any:
    net, meta = model
    return predict_raster(net, meta, raster, out, probabilities=out.with_suffix(".prob.tif"), **{**KW, **kw})


def test_predict_on_dask_equals_local(raster: Path, tmp_path: Path, model, dask_executor) -> None:
    loc = _run(model, raster, tmp_path / "local.tif")
    seen: list[int] = []
    dist = _run(model, raster, tmp_path / "dask.tif", executor=dask_executor, progress=seen.append)
    with rasterio.open(loc.map_path) as m:
        inference = json.loads(m.tags()["inference"])
        assert inference["stripe_width"] < 160  # several column stripes were run
        assert "executor" not in inference  # local outputs keep their metadata
        assert m.read(1)[:30, :30].tolist() == [[m.nodata] * 30] * 30
    with rasterio.open(dist.map_path) as m:
        assert json.loads(m.tags()["inference"])["executor"] == "dask"
        assert json.loads(m.tags()["inference"])["executor_workers"] == 2
    _assert_same(loc.map_path, dist.map_path)
    _assert_same(loc.probabilities_path, dist.probabilities_path)
    assert (dist.windows_predicted, dist.windows_skipped) == (loc.windows_predicted, loc.windows_skipped)
    assert dist.windows_skipped > 0 and sum(seen) == 96 * 160


def test_resume_across_executors_is_byte_identical(
    raster: Path, tmp_path: Path, model, dask_executor
) -> None:
    full = _run(model, raster, tmp_path / "full.tif")
    calls = {"n": 0}

    def stop_after_first_block_row(n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise JobCancelledError("test interrupt")

    # interrupted locally, finished on the workers: only missing blocks run, the file is the same bytes
    part = tmp_path / "part.tif"
    with pytest.raises(JobCancelledError):
        _run(model, raster, part, progress=stop_after_first_block_row)
    assert not part.exists() and (tmp_path / ".part.tif.partial.tif").exists()
    res = _run(model, raster, part, executor=dask_executor)
    assert res.blocks_resumed > 0 and res.windows_predicted < full.windows_predicted
    assert part.read_bytes() == full.map_path.read_bytes()
    assert res.probabilities_path.read_bytes() == full.probabilities_path.read_bytes()
    # interrupted on the workers, finished locally: same pixels (the tags record the first run's executor)
    calls["n"] = 0
    other = tmp_path / "other.tif"
    with pytest.raises(JobCancelledError):
        _run(model, raster, other, executor=dask_executor, progress=stop_after_first_block_row)
    res = _run(model, raster, other)
    assert res.blocks_resumed > 0 and res.windows_predicted < full.windows_predicted
    _assert_same(other, full.map_path)
    _assert_same(res.probabilities_path, full.probabilities_path)


@pytest.mark.slow
def test_worker_killed_mid_job_still_completes(raster: Path, tmp_path: Path, model, dask_executor) -> None:
    ref = _run(model, raster, tmp_path / "ref.tif")
    client = dask_executor.client
    killed = {"done": False}

    def kill_one_worker(n: int) -> None:
        if not killed["done"]:
            killed["done"] = True
            pids = client.run(os.getpid)  # {worker address: pid}
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)

    out = _run(model, raster, tmp_path / "out.tif", executor=dask_executor, progress=kill_one_worker)
    assert killed["done"]
    _assert_same(ref.map_path, out.map_path)
    _assert_same(ref.probabilities_path, out.probabilities_path)
    client.wait_for_workers(2, timeout=60)


def test_cli_worker_that_cannot_see_the_raster(raster: Path, tmp_path: Path, dask_executor, capsys) -> None:
    from rasterlearn.cli import main

    pkg = _package(tmp_path)
    address = dask_executor.client.scheduler.address
    # a /vsimem file exists only in this process: the workers cannot open it -> one line, exit 2
    with rasterio.open(raster) as src:
        profile, data = src.profile, src.read()
    hidden = "/vsimem/rl_client_only.tif"
    with rasterio.open(hidden, "w", **profile) as dst:
        dst.write(data)
    try:
        capsys.readouterr()
        out = tmp_path / "c.tif"
        assert main(["-q", "predict", str(pkg), hidden, "-o", str(out), "--scheduler", address]) == 2
        err = capsys.readouterr().err.strip()
        assert f"workers cannot read {hidden}" in err and "storage every worker mounts" in err
        assert "Traceback" not in err and not out.exists()
    finally:
        rasterio.shutil.delete(hidden)


@pytest.mark.slow  # starts a second LocalCluster; its workers import smp and receive a U-Net
def test_cli_predict_one_raster_with_workers(raster: Path, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    pkg = _package(tmp_path)
    base = ["-q", "predict", str(pkg), str(raster), "--window", "64", "--blocksize", "32"]
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert main([*base, "-o", str(a), "--probabilities", str(tmp_path / "pa.tif")]) == 0
    code = main([*base, "-o", str(b), "--probabilities", str(tmp_path / "pb.tif"), "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    _assert_same(a, b)
    _assert_same(tmp_path / "pa.tif", tmp_path / "pb.tif")
    with rasterio.open(b) as m:
        assert json.loads(m.tags()["inference"])["executor"] == "dask"
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "d.tif"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Cannot reach the dask scheduler at tcp://127.0.0.1:1" in err and "Traceback" not in err
