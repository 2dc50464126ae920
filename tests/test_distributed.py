"""dask.distributed execution: the same blocks, the same writer and journal, byte-identical outputs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.engine.executor import LocalExecutor, open_executor
from rasterlearn.errors import ConfigError, InputError, JobCancelledError
from rasterlearn.features.cluster import cluster_raster
from rasterlearn.features.reduce import reduce_raster
from rasterlearn.features.similarity import similarity_raster

distributed = pytest.importorskip("distributed", reason="the dask extra (distributed) is not installed")


@pytest.fixture()
def raster(make_raster) -> Path:
    rng = np.random.default_rng(4)
    data = rng.normal(100, 20, (4, 70, 90)).astype("float32")
    data[:, :10, :15] = -9999  # a nodata corner
    return make_raster(data, nodata=-9999)


def test_cluster_reduce_similarity_on_dask_equal_local(raster: Path, tmp_path: Path, dask_executor) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    with rasterio.open(raster) as ds:
        x, y = ds.xy(40, 50)
        crs = ds.crs
    refs = gpd.GeoDataFrame(geometry=[Point(x, y)], crs=crs)
    for name, ex in (("local", None), ("dask", dask_executor)):
        cluster_raster(raster, tmp_path / f"k_{name}.tif", clusters=3, blocksize=32, executor=ex)
        reduce_raster(raster, tmp_path / f"p_{name}.tif", components=2, blocksize=32, executor=ex)
        similarity_raster(raster, refs, tmp_path / f"s_{name}.tif", blocksize=32, executor=ex)
    for stem in ("k", "p", "s"):
        _assert_same_raster(tmp_path / f"{stem}_local.tif", tmp_path / f"{stem}_dask.tif")
    sizes = [
        json.loads((tmp_path / f"k_{n}.clusters.json").read_text())["pixels_per_cluster"]
        for n in ("local", "dask")
    ]
    assert sizes[0] == sizes[1] and sum(sizes[0].values()) == 70 * 90 - 10 * 15


def _assert_same_raster(a: Path, b: Path) -> None:
    """Same pixels, grid, dtype, nodata and tags (except the tags naming each output's own model folder)."""
    with rasterio.open(a) as x, rasterio.open(b) as y:
        np.testing.assert_array_equal(x.read(), y.read())
        assert (x.profile["dtype"], x.transform, x.crs) == (y.profile["dtype"], y.transform, y.crs)
        np.testing.assert_equal(x.nodata, y.nodata)  # NaN for float maps
        tx, ty = x.tags(), y.tags()
        for t in (tx, ty):
            t.pop("rasterlearn_model", None)
        assert tx == ty


def test_resume_across_executors_is_byte_identical(raster: Path, tmp_path: Path, dask_executor) -> None:
    full = tmp_path / "full.tif"
    cluster_raster(raster, full, clusters=3, blocksize=32, model_out=tmp_path / "m")
    calls = {"n": 0}

    def stop_after_two(n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise JobCancelledError("test interrupt")

    part = tmp_path / "part.tif"
    with pytest.raises(JobCancelledError):
        cluster_raster(raster, part, model=tmp_path / "m", blocksize=32, progress=stop_after_two)
    assert not part.exists()
    seen: list[int] = []
    cluster_raster(
        raster, part, model=tmp_path / "m", blocksize=32, executor=dask_executor, progress=seen.append
    )
    assert (
        part.read_bytes()
        == cluster_raster(
            raster, tmp_path / "again.tif", model=tmp_path / "m", blocksize=32
        ).path.read_bytes()
    )
    assert len(seen) == 9  # 3 x 3 blocks: the two committed blocks are reported, not recomputed


@pytest.mark.slow
def test_worker_killed_mid_job_still_completes(raster: Path, tmp_path: Path, dask_executor) -> None:
    ref = cluster_raster(raster, tmp_path / "ref.tif", clusters=3, blocksize=16, model_out=tmp_path / "m")
    client = dask_executor.client
    killed = {"done": False}

    def kill_one_worker(n: int) -> None:
        if not killed["done"]:
            killed["done"] = True
            pids = client.run(os.getpid)  # {worker address: pid}
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)

    out = cluster_raster(
        raster,
        tmp_path / "out.tif",
        model=tmp_path / "m",
        blocksize=16,
        executor=dask_executor,
        progress=kill_one_worker,
    )
    assert killed["done"]
    assert out.path.read_bytes() == ref.path.read_bytes()
    client.wait_for_workers(2, timeout=60)


def test_bad_executor_options_are_one_line_errors(raster: Path, tmp_path: Path, dask_executor) -> None:
    with (
        pytest.raises(
            InputError, match=r"Cannot reach the dask scheduler at tcp://127\.0\.0\.1:1.*dask scheduler"
        ),
        open_executor(scheduler="tcp://127.0.0.1:1"),
    ):
        pass
    with pytest.raises(ConfigError, match="not both"), open_executor(scheduler="tcp://x:1", workers=2):
        pass
    with open_executor() as ex:
        assert isinstance(ex, LocalExecutor)
    with pytest.raises(
        InputError, match=r"workers cannot read /vsimem/nowhere\.tif.*storage every worker mounts"
    ):
        dask_executor.check_readable("/vsimem/nowhere.tif")


@pytest.mark.slow  # starts a second LocalCluster
def test_cli_cluster_workers_option(raster: Path, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    base = ["-q", "cluster", str(raster), "--clusters", "3"]
    assert main([*base, "-o", str(a)]) == 0
    assert main([*base, "-o", str(b), "--workers", "2"]) == 0, capsys.readouterr().err
    _assert_same_raster(a, b)
    assert main([*base, "-o", str(tmp_path / "c.tif"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "Cannot reach the dask scheduler" in capsys.readouterr().err
