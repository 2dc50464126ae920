"""Contracts of every streaming stage on the engine, over one table of stages.

For chips, predict (one date and two dates), embed, reduce, cluster, similarity, classify, evaluate and
vectorize:

(a) a CLI run killed with SIGKILL at a random block, then run again, gives the bytes of an uninterrupted run;
(b) a library run cancelled through the :class:`~rasterlearn.engine.events.CancelToken` leaves nothing under
    the final output name, and the next run resumes from the committed state and gives the same bytes;
(c) ``--progress json`` writes only JSON lines on stderr: one ``started`` event (``total`` is null only for
    predict, whose total is known once the AOI-clipped plan is made), ``progress`` counting up to exactly the
    announced total in every phase, and a ``finished`` event, with and without ``--aoi`` where one is taken;
(d) ``--config FILE.yaml`` on each of these commands: ``tests/test_config.py`` (every stage command);
(e) every raster read runs under the bounded GDAL block cache (:func:`rasterlearn.io.raster.gdal_cache`).

Evaluate and vectorize reduce windows to one result instead of writing raster blocks: their journal is a
:class:`~rasterlearn.engine.reduction.ReductionRecord` (the same ``.NAME.progress.json``, holding the
running state), and (b) checks that the rerun resumed from it and removed it. The SIGKILL case runs
subprocesses: chips in the default suite, the others marked slow.

Each stage is one :class:`Stage` row: how to build its tiny inputs (32-96 px rasters, a tiny model written by
the test, no downloads), its command line and its library call. Predict's events through the library are
in ``tests/test_engine_contract.py``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rasterlearn.chips import Scene, make_chips
from rasterlearn.engine.events import CancelToken, Monitor, PhaseProgress
from rasterlearn.errors import JobCancelledError
from rasterlearn.evaluate import evaluate_map
from rasterlearn.features.classify import classify_raster
from rasterlearn.features.cluster import cluster_raster
from rasterlearn.features.reduce import reduce_raster
from rasterlearn.features.similarity import similarity_raster
from rasterlearn.vectorize import vectorize_raster
from tests.conftest import write_tif

ROOT = Path(__file__).resolve().parents[1]
X0, Y1, PX = 500_000.0, 4_000_000.0, 10.0
H, W = 64, 48  # the stages' rasters: 4 x 3 blocks of 16 px


# ---------------------------------------------------------------------------------------------------------
# inputs, written once per test into its own folder
# ---------------------------------------------------------------------------------------------------------
def _features(folder: Path) -> Path:
    """A 4-band float32 'feature raster' with spatial structure and a nodata corner."""
    rng = np.random.default_rng(11)
    rows, cols = np.mgrid[0:H, 0:W].astype("float32")
    data = np.stack([rows / H, cols / W, np.sin(rows / 5.0), np.cos(cols / 7.0)])
    data = data + rng.normal(0, 0.05, data.shape).astype("float32")
    data[:, :5, :6] = np.nan
    return write_tif(folder / "features.tif", data.astype("float32"), nodata=float("nan"))


def _points(folder: Path, name: str, n: int = 40) -> Path:
    import geopandas as gpd
    from shapely.geometry import Point

    rng = np.random.default_rng(5)
    r, c = rng.uniform(8, H - 1, n), rng.uniform(0, W - 1, n)
    pts = [Point(X0 + PX * (x + 0.5), Y1 - PX * (y + 0.5)) for y, x in zip(r, c, strict=True)]
    cls = np.where(r < H / 2, 1, 2)
    path = folder / name
    gpd.GeoDataFrame({"cls": cls}, geometry=pts, crs="EPSG:32633").to_file(path)
    return path


def _class_map(folder: Path, name: str, seed: int) -> Path:
    """A uint8 class map (codes 1..3, blobs that cross block seams) with nodata 0 in a corner."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 4, (H // 8, W // 8)).astype("uint8")
    data = np.kron(coarse, np.ones((8, 8), "uint8"))
    noise = rng.random((H, W)) < 0.05
    data[noise] = rng.integers(1, 4, int(noise.sum())).astype("uint8")
    data[:4, :4] = 0
    return write_tif(folder / name, data, nodata=0)


def _image(folder: Path, name: str = "image.tif", bands: int = 3, seed: int = 2, rows: int = H) -> Path:
    rng = np.random.default_rng(seed)
    return write_tif(folder / name, rng.integers(0, 250, (bands, rows, W)).astype("uint8"), nodata=255)


def _labels(folder: Path) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    polys = [
        box(X0 + 40, Y1 - 300, X0 + 200, Y1 - 60),
        box(X0 + 250, Y1 - 600, X0 + 460, Y1 - 340),
    ]
    path = folder / "labels.gpkg"
    gpd.GeoDataFrame({"cls": [1, 2]}, geometry=polys, crs="EPSG:32633").to_file(path)
    return path


def _package(folder: Path, temporal: bool = False) -> Path:
    """A tiny U-Net package (random weights, seeded)."""
    import torch

    from rasterlearn.labels import ClassSchema
    from rasterlearn.models import ModelMetadata, create_model, save_package
    from rasterlearn.normalize import Normalization

    torch.manual_seed(0)
    bands = ["x@t0", "y@t0", "x@t1", "y@t1"] if temporal else ["r", "g", "b"]
    kw: dict[str, Any] = {"temporal": "siamese", "timesteps": 2} if temporal else {}
    enc = "tu-mobilenetv3_small_050"
    model = create_model("unet", enc, len(bands), 2, **kw)
    meta = ModelMetadata(
        arch="unet",
        encoder=enc,
        model_kwargs=kw,
        in_channels=len(bands),
        num_classes=2,
        bands=bands,
        normalization=Normalization("zscore", (120.0,) * len(bands), (50.0,) * len(bands)).to_dict(),
        schema=ClassSchema.infer([0, 1]).to_dict(),
        chip_size=32,
    )
    return save_package(model, meta, folder / "pkg")


def _aoi_bounds() -> str:
    """The left half of the rasters (24 of 48 columns, every row): ``l,b,r,t``."""
    return f"{X0},{Y1 - PX * H},{X0 + PX * W / 2},{Y1}"


# ---------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------
class _Patcher:
    """``monkeypatch``'s ``setattr``/``setitem`` for the subprocess harness (nothing to undo there)."""

    setattr = staticmethod(setattr)

    @staticmethod
    def setitem(d: dict[str, Any], key: str, value: Any) -> None:
        d[key] = value


def _small_feature_blocks(mp: Any) -> None:
    """The feature commands read 512 px windows (no option): 16 px ones make several blocks here."""
    import rasterlearn.features._io as fio

    mp.setattr(fio, "window_size_for", lambda bands, cap=512, budget_mb=64.0: min(cap, 16))


def _small_evaluate_windows(mp: Any) -> None:
    """``evaluate`` has no window option: 16 px windows make several blocks here."""
    import rasterlearn.evaluate as ev

    mp.setitem(ev.evaluate_map.__kwdefaults__, "window_size", 16)


@dataclass(frozen=True)
class Stage:
    """One streaming stage: its inputs, command line, library call, outputs and expected totals."""

    name: str
    build: Callable[[Path], dict[str, Path]]
    argv: str  # the command line: whitespace-separated words, {input} and {out} filled in word by word
    call: Callable[[dict[str, Path], Path, Any], Any]
    out_name: str = "out.tif"
    outputs: Callable[[Path], list[Path]] = field(default=lambda out: [out])
    final: Callable[[Path], list[Path]] = field(default=lambda out: [out])  # absent until complete
    aoi: bool = False
    resume: str | None = "journal"  # how a rerun shows it resumed: journal, reduction, session, chips
    total: Callable[[bool], int] | None = None  # the main phase's total (whole raster / AOI)
    patch: Callable[[Any], None] | None = None
    cancel_after: int = 1  # the progress call that cancels


def _feature_inputs(folder: Path) -> dict[str, Path]:
    return {"raster": _features(folder), "points": _points(folder, "points.gpkg")}


BLOCKS = (H // 16) * (W // 16)


def _predict(pkg: Path, src: Path | list[Path], out: Path, progress: Any) -> Any:
    from rasterlearn.predict import predict_package  # torch: not imported by the subprocess harness

    return predict_package(
        pkg,
        src,
        out,
        window=32,
        overlap=0.5,
        batch_size=1,
        blocksize=16,
        threads=1,
        io_threads=1,
        progress=progress,
    )


def _embed(image: Path, out: Path, progress: Any) -> Any:
    from rasterlearn.embed import embed

    return embed(
        image,
        "mobilenetv3_small_050",
        pretrained=False,
        size=32,
        stride=16,
        layer=0,
        normalization="none",
        device="cpu",
        memory_mb=0.001,
        batch_size=2,
        output=out,
        progress=progress,
    )


PREDICT_OPTS = "--window 32 --overlap 0.5 --batch-size 1 --blocksize 16 --threads 1 --io-threads 1"
EMBED_OPTS = "-m mobilenetv3_small_050 --no-pretrained --size 32 --stride 16 --layer 0 --normalization none"
EMBED_OPTS += " --device cpu --memory-mb 0.001 --batch-size 2"

STAGES: list[Stage] = [
    Stage(
        "chips",
        lambda d: {"image": _image(d), "labels": _labels(d)},
        "chips -r {image} -l {labels} -a cls -o {out} --size 16 --val 0 --test 0",
        lambda i, out, p: make_chips(
            [Scene(i["image"], i["labels"], attribute="cls")], out, size=16, val=0, test=0, progress=p
        ),
        out_name="chips",
        outputs=lambda out: sorted(p for p in out.rglob("*") if p.is_file()),
        final=lambda out: [out / "dataset.json", out / "manifest.csv"],  # the folder holds finished chips
        resume="chips",
        total=lambda aoi: BLOCKS,
    ),
    Stage(
        "predict",
        lambda d: {"image": _image(d), "pkg": _package(d)},
        "predict {pkg} {image} -o {out} " + PREDICT_OPTS,
        lambda i, out, p: _predict(i["pkg"], i["image"], out, p),
        aoi=True,
        total=lambda aoi: H * W // (2 if aoi else 1),
    ),
    Stage(
        "change-predict",
        lambda d: {"a": _image(d, "a.tif", 2, 3), "b": _image(d, "b.tif", 2, 4), "pkg": _package(d, True)},
        "predict {pkg} --image {a} --image {b} -o {out} " + PREDICT_OPTS,
        lambda i, out, p: _predict(i["pkg"], [i["a"], i["b"]], out, p),
        aoi=True,
        total=lambda aoi: H * W // (2 if aoi else 1),
    ),
    Stage(
        "embed",
        lambda d: {"image": _image(d, rows=96)},
        "embed {image} -o {out} " + EMBED_OPTS,
        lambda i, out, p: _embed(i["image"], out, p),
        aoi=True,
        resume="session",
        total=lambda aoi: 3 if aoi else 10,  # 32 px tiles every 16 px: 5 x 2 (AOI, 64 x 24 px: 3 x 1)
        cancel_after=3,  # feature strips of 16 rows (32 px) are committed from the third tile row on
    ),
    Stage(
        "reduce",
        _feature_inputs,
        "reduce {raster} -o {out} -k 2",
        lambda i, out, p: reduce_raster(i["raster"], out, components=2, blocksize=16, progress=p),
        total=lambda aoi: BLOCKS,
        patch=_small_feature_blocks,
    ),
    Stage(
        "cluster",
        _feature_inputs,
        "cluster {raster} -o {out} -k 3 --sample-size 2000",
        lambda i, out, p: cluster_raster(
            i["raster"], out, clusters=3, sample_size=2000, blocksize=16, progress=p
        ),
        total=lambda aoi: BLOCKS,
        patch=_small_feature_blocks,
    ),
    Stage(
        "similarity",
        _feature_inputs,
        "similarity {raster} -r {points} -o {out}",
        lambda i, out, p: similarity_raster(i["raster"], i["points"], out, blocksize=16, progress=p),
        total=lambda aoi: BLOCKS,
        patch=_small_feature_blocks,
    ),
    Stage(
        "classify",
        _feature_inputs,
        "classify {raster} -l {points} -a cls --method knn --cv none -o {out}",
        lambda i, out, p: classify_raster(
            i["raster"], i["points"], out, attribute="cls", method="knn", cv="none", blocksize=16, progress=p
        ),
        total=lambda aoi: BLOCKS,
        patch=_small_feature_blocks,
    ),
    Stage(
        "evaluate",
        lambda d: {"map": _class_map(d, "map.tif", 1), "truth": _class_map(d, "truth.tif", 2)},
        "evaluate {map} --truth {truth} -o {out}",
        lambda i, out, p: evaluate_map(i["map"], i["truth"], output=out, window_size=16, progress=p),
        out_name="metrics.json",
        outputs=lambda out: [out, out.with_suffix(".csv"), out.with_suffix(".png")],
        final=lambda out: [out, out.with_suffix(".csv"), out.with_suffix(".png")],
        aoi=True,
        resume="reduction",
        total=lambda aoi: H * W // (2 if aoi else 1),
        patch=_small_evaluate_windows,
    ),
    Stage(
        "vectorize",
        lambda d: {"map": _class_map(d, "map.tif", 1)},
        "vectorize {map} -o {out} --window-size 16",
        lambda i, out, p: vectorize_raster(i["map"], out, window_size=16, progress=p),
        out_name="polygons.geojson",  # a GeoPackage records its write time: not byte-comparable
        resume="reduction",
        total=lambda aoi: H * W,
    ),
]
BY_NAME = {s.name: s for s in STAGES}
AOI_CASES = [(s.name, aoi) for s in STAGES for aoi in ((False, True) if s.aoi else (False,))]


def apply_patch(name: str, mp: Any = _Patcher) -> None:
    """Apply a stage's test-only patch (block sizes the command line has no option for)."""
    patch = BY_NAME[name].patch
    if patch is not None:
        patch(mp)


def _argv(stage: Stage, inputs: dict[str, Path], out: Path, aoi: bool = False) -> list[str]:
    args = [word.format(**inputs, out=out) for word in stage.argv.split()]
    return [*args, "--aoi", _aoi_bounds()] if aoi else args


# ---------------------------------------------------------------------------------------------------------
# (c) --progress json
# ---------------------------------------------------------------------------------------------------------
def _check_events(lines: list[str], expected: int | None) -> list[dict[str, Any]]:
    events = [json.loads(ln) for ln in lines if ln.strip()]  # every line is JSON
    assert events and all(e["v"] == 1 for e in events)
    kinds = [e["event"] for e in events if e["event"] != "log"]  # log lines may come before the start
    assert kinds[0] == "started" and kinds.count("started") == 1, kinds
    started = next(e for e in events if e["event"] == "started")
    assert "total" in started and "unit" in started, started
    assert kinds[-1] == "finished" and kinds.count("finished") == 1, kinds
    phases: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] == "progress":
            phases.setdefault(e["phase"], []).append(e)
    assert phases, "no progress event"
    for name, prog in phases.items():
        done = [e["done"] for e in prog]
        assert done == sorted(done), f"{name}: progress went backwards: {done}"
        counted = [e for e in prog if e["done"]]
        assert counted and all(isinstance(e["total"], int) for e in counted), (
            f"{name}: counted without a total"
        )
        last = prog[-1]
        assert last["total"] is not None and last["done"] == last["total"], f"{name}: {last}"
        assert last["fraction"] == 1.0
        assert all(e["done"] <= last["total"] for e in prog), f"{name}: counted past the total"
    first = next(e["phase"] for e in events if e["event"] == "phase")
    if expected is not None:
        assert phases[first][-1]["total"] == expected
    return events


@pytest.mark.parametrize(
    ("name", "aoi"), AOI_CASES, ids=[f"{n}-{'aoi' if a else 'whole'}" for n, a in AOI_CASES]
)
def test_progress_json_counts_up_to_the_announced_total(name, aoi, tmp_path, capsys, monkeypatch) -> None:
    from rasterlearn.cli import main

    stage = BY_NAME[name]
    apply_patch(name, monkeypatch)
    inputs = stage.build(tmp_path)
    out = tmp_path / stage.out_name
    capsys.readouterr()
    code = main([*_argv(stage, inputs, out, aoi), "--progress", "json"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    _check_events(err.splitlines(), stage.total(aoi) if stage.total else None)
    assert all(p.exists() for p in stage.outputs(out))


# ---------------------------------------------------------------------------------------------------------
# (b) cancel through the token, then resume
# ---------------------------------------------------------------------------------------------------------
def _cancelling_progress(after: int) -> tuple[PhaseProgress, CancelToken]:
    """A phase callback whose token is cancelled by the ``after``-th block (so it raises right there)."""
    token = CancelToken()
    calls = {"n": 0}

    def on_event(event: Any) -> None:
        if event.kind == "progress" and event.done:
            calls["n"] += 1
            if calls["n"] >= after:
                token.cancel("test cancel")

    mon = Monitor("contract", on_event, token=token, min_interval=0.0)
    return mon.phase("blocks"), token


def _snapshot(stage: Stage, out: Path) -> dict[str, bytes]:
    """The bytes of every output file, by path relative to the output's folder."""
    return {str(p.relative_to(out.parent)): p.read_bytes() for p in stage.outputs(out)}


def _fresh(out: Path) -> Path:
    """An empty folder for ``out`` (whatever an earlier run left there removed)."""
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir()
    return out


def _resumed(stage: Stage, log: str, result: Any) -> None:
    if stage.resume == "journal":
        m = re.search(r"Resuming \S+: (\d+) blocks already written", log)
        assert m and int(m.group(1)) > 0, f"{stage.name}: the rerun did not resume:\n{log[-2000:]}"
    elif stage.resume == "reduction":
        m = re.search(r"Resuming \S+: (\d+) windows already done", log)
        assert m and int(m.group(1)) > 0, f"{stage.name}: the rerun did not resume:\n{log[-2000:]}"
    elif stage.resume == "session":
        m = re.search(r"Resumed session \S+: (\d+) feature strips", log)
        assert m and int(m.group(1)) > 0, f"{stage.name}: the rerun did not resume:\n{log[-2000:]}"
    elif stage.resume == "chips":
        assert "Resuming the chip dataset" in log and result.skipped > 0, (result.written, result.skipped)


@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_cancel_leaves_no_final_output_and_the_rerun_resumes_identically(name, tmp_path, caplog) -> None:
    stage = BY_NAME[name]
    inputs = stage.build(tmp_path)
    out = _fresh(tmp_path / "run" / stage.out_name)
    stage.call(inputs, out, None)  # uninterrupted, under the same name (outputs record their paths)
    expected = _snapshot(stage, out)

    _fresh(out)
    progress, token = _cancelling_progress(stage.cancel_after)
    with pytest.raises(JobCancelledError):
        stage.call(inputs, out, progress)
    assert token.cancelled
    left = sorted(str(p.relative_to(out.parent)) for p in out.parent.rglob("*"))
    assert not any(p.exists() for p in stage.final(out)), f"{name}: a final output after a cancel: {left}"
    journal = out.parent / f".{out.name}.progress.json"
    if stage.resume in ("journal", "reduction"):
        assert journal.exists(), f"{name}: no journal kept after a cancel: {left}"
        assert json.loads(journal.read_text())["done"], f"{name}: the journal committed no block"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rasterlearn"):
        result = stage.call(inputs, out, None)
    _resumed(stage, caplog.text, result)
    assert _snapshot(stage, out) == expected, f"{name}: the resumed output differs"
    assert not journal.exists(), f"{name}: the journal outlived the finished output"


# ---------------------------------------------------------------------------------------------------------
# (a) SIGKILL at a random block, then run again
# ---------------------------------------------------------------------------------------------------------
HARNESS = """
import os, signal, sys
from rasterlearn.engine import events
from tests.test_stage_contracts import apply_patch
apply_patch(sys.argv[1])
after, calls = int(os.environ.get("RL_KILL_AFTER", "0")), [0]
plain = events.PhaseProgress.__call__
def counted(self, n=1, total=None):
    plain(self, n, total)
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), signal.SIGKILL)
events.PhaseProgress.__call__ = counted
from rasterlearn.cli import main
code = main(sys.argv[2:])
open(os.environ["RL_CALLS_FILE"], "w").write(str(calls[0]))
sys.exit(code)
"""


def _run_cli(name: str, argv: list[str], tmp: Path, kill_after: int = 0) -> tuple[int, int, str]:
    calls = tmp / "calls.txt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RL_KILL_AFTER": str(kill_after),
        "RL_CALLS_FILE": str(calls),
    }
    r = subprocess.run(
        [sys.executable, "-c", HARNESS, name, *argv, "--progress", "none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    n = int(calls.read_text()) if calls.exists() and r.returncode == 0 else -1
    return r.returncode, n, r.stderr


def _kill_and_resume(name: str, tmp_path: Path) -> None:
    stage = BY_NAME[name]
    inputs = stage.build(tmp_path)
    out = _fresh(tmp_path / "run" / stage.out_name)
    argv = _argv(stage, inputs, out)
    code, calls, err = _run_cli(name, argv, tmp_path)
    assert code == 0, err[-3000:]
    assert calls >= 3, f"{name}: too few blocks ({calls}) to kill in the middle"
    expected = _snapshot(stage, out)
    after = random.Random(f"{name}-{os.environ.get('RL_CONTRACT_SEED', '')}").randrange(1, calls)
    _fresh(out)
    code, _, err = _run_cli(name, argv, tmp_path, kill_after=after)
    assert code == -9, f"{name}: not killed at block {after} of {calls}: {err[-3000:]}"
    assert not any(p.exists() for p in stage.final(out)), f"{name}: a final output after a kill"
    code, _, err = _run_cli(name, argv, tmp_path)
    assert code == 0, f"{name} after a kill at block {after}: {err[-3000:]}"
    assert _snapshot(stage, out) == expected, (
        f"{name}: killed at block {after} of {calls}, the rerun's output differs"
    )


@pytest.mark.parametrize("name", ["chips"])
def test_sigkill_at_a_random_block_then_rerun_is_byte_identical(name, tmp_path) -> None:
    _kill_and_resume(name, tmp_path)


SLOW_KILL = [s.name for s in STAGES if s.name != "chips"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_KILL)
def test_sigkill_at_a_random_block_then_rerun_is_byte_identical_slow(name, tmp_path) -> None:
    _kill_and_resume(name, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# every raster read of a stage runs under a bounded GDAL block cache (io.raster.gdal_cache)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_every_read_runs_under_the_gdal_cache_bound(name, tmp_path, monkeypatch) -> None:
    """GDAL's block cache size is process-wide: a read is bounded while any ``rasterio.Env`` holding
    ``GDAL_CACHEMAX`` (what :func:`rasterlearn.io.raster.gdal_cache` enters) is open, in any thread."""
    import threading

    import rasterio.env

    import rasterlearn.io.raster as rio_raster

    stage = BY_NAME[name]
    inputs = stage.build(tmp_path)
    lock, active, bounded = threading.Lock(), [0], []
    enter, exit_, read = rasterio.env.Env.__enter__, rasterio.env.Env.__exit__, rio_raster.RasterReader.read

    def env_enter(self: Any) -> Any:
        with lock:
            active[0] += "GDAL_CACHEMAX" in self.options
        return enter(self)

    def env_exit(self: Any, *exc: Any) -> Any:
        with lock:
            active[0] -= "GDAL_CACHEMAX" in self.options
        return exit_(self, *exc)

    def probe(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            bounded.append(active[0] > 0)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.env.Env, "__enter__", env_enter)
    monkeypatch.setattr(rasterio.env.Env, "__exit__", env_exit)
    monkeypatch.setattr(rio_raster.RasterReader, "read", probe)
    stage.call(inputs, _fresh(tmp_path / "run" / stage.out_name), None)
    assert bounded, f"{name}: no read through RasterReader.read"
    assert all(bounded), f"{name}: {bounded.count(False)} of {len(bounded)} reads without a cache bound"
