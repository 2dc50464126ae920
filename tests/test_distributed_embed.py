"""embed and evaluate on dask.distributed: the same tiles, batches and counts, byte-identical outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.embed import embed
from rasterlearn.errors import InputError, JobCancelledError

distributed = pytest.importorskip("distributed", reason="the dask extra (distributed) is not installed")

VIT = "vit_tiny_patch16_224"
VIT_KW = {"depth": 2, "patch_size": 4}  # 16 px tiles give 4 x 4 feature pixels


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny ViT's weights, written by the test (nothing is downloaded)."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model(VIT, pretrained=False, num_classes=0, in_chans=3, img_size=16, **VIT_KW)
    path = tmp_path_factory.mktemp("ckpt") / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture()
def raster(make_raster) -> Path:
    """3 bands, 100 x 90 px (12 x 11 tiles of 16 px every 8 px), with a hole that empties whole tiles."""
    rng = np.random.default_rng(3)
    data = rng.integers(1, 250, (3, 100, 90)).astype("uint8")
    data[:, 30:70, 20:60] = 0
    return make_raster(data, nodata=0)


def _embed(raster: Path, ckpt: Path, out: Path, **kw) -> object:
    args = {"size": 16, "stride": 8, "device": "cpu", "batch_size": 8, "model_kwargs": VIT_KW}
    return embed(raster, VIT, checkpoint=ckpt, output=out, input_size=16, **{**args, **kw})


def _assert_same_features(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        xa, ya = x.read(), y.read()
        assert xa.dtype == ya.dtype == np.float32
        assert np.isnan(xa).any() and np.isfinite(xa).any()  # the hole gave nodata, the rest features
        np.testing.assert_array_equal(xa, ya)
        assert (x.transform, x.crs, x.count) == (y.transform, y.crs, y.count)
        assert np.isnan(x.nodata) and np.isnan(y.nodata)
        assert x.tags() == y.tags()


@pytest.mark.parametrize("memory_mb", [256.0, 0.3], ids=["one-block", "stripes-and-strips"])
def test_embed_on_dask_equals_local(raster, checkpoint, tmp_path, dask_executor, memory_mb):
    local = _embed(raster, checkpoint, tmp_path / "local.tif", memory_mb=memory_mb)
    seen: list[int] = []
    remote = _embed(
        raster,
        checkpoint,
        tmp_path / "dask.tif",
        memory_mb=memory_mb,
        executor=dask_executor,
        progress=seen.append,
    )
    _assert_same_features(local.path, remote.path)
    assert remote.session_id == local.session_id  # the executor is not part of the job
    assert remote.tiles_skipped == local.tiles_skipped > 0
    assert sum(seen) == local.tiles == 12 * 11
    if memory_mb < 1:
        assert local.stripes == remote.stripes > 1
        with rasterio.open(local.path) as ds:
            assert ds.block_shapes[0][0] < ds.height  # several strips


def test_embed_resumes_across_executors(raster, checkpoint, tmp_path, dask_executor):
    full = _embed(raster, checkpoint, tmp_path / "full.tif", memory_mb=0.3, cache_dir=tmp_path / "s1")
    calls = {"n": 0}

    def stop_after_first_block(n: int) -> None:  # tile row 10 of the first stripe: strip 0 is committed
        calls["n"] += 1
        if calls["n"] == 11:
            raise JobCancelledError("test interrupt")

    out = tmp_path / "part.tif"
    for first, then in ((None, dask_executor), (dask_executor, None)):
        calls["n"] = 0
        cache = tmp_path / f"s_{first is None}"
        with pytest.raises(JobCancelledError):
            _embed(
                raster,
                checkpoint,
                out,
                memory_mb=0.3,
                cache_dir=cache,
                executor=first,
                progress=stop_after_first_block,
            )
        assert not out.exists()
        res = _embed(raster, checkpoint, out, memory_mb=0.3, cache_dir=cache, executor=then)
        assert res.resumed
        with rasterio.open(out) as a, rasterio.open(full.path) as b:
            np.testing.assert_array_equal(a.read(), b.read())
        out.unlink()


@pytest.mark.slow  # starts a second LocalCluster
def test_cli_embed_workers_2(raster, checkpoint, tmp_path, capsys):
    from rasterlearn.cli import main

    base = ["-q", "embed", str(raster), "--model", VIT, "--checkpoint", str(checkpoint)]
    base += ["--size", "16", "--stride", "16", "--model-kwargs", json.dumps(VIT_KW), "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "a.tif")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.tif"), "--workers", "2"]) == 0, capsys.readouterr().err
    _assert_same_features(tmp_path / "a.tif", tmp_path / "b.tif")


def test_workers_that_cannot_see_the_raster_give_one_line(
    raster, checkpoint, tmp_path, dask_executor, capsys
):
    from rasterlearn.cli import main

    with pytest.raises(InputError, match=r"workers cannot read /vsimem/.*storage every worker mounts"):
        dask_executor.check_readable("/vsimem/only_here.tif")
    # a raster in this process's memory only: the client opens it, the workers cannot
    with rasterio.MemoryFile(raster.read_bytes(), filename="only_here.tif") as mem:
        args = ["-q", "embed", mem.name, "--model", VIT, "--checkpoint", str(checkpoint), "--size", "16"]
        args += ["--model-kwargs", json.dumps(VIT_KW), "--device", "cpu", "-o", str(tmp_path / "x.tif")]
        assert main([*args, "--scheduler", dask_executor.client.scheduler_info()["address"]]) == 2
    err = " ".join(capsys.readouterr().err.split())  # one message (rich wraps it to the terminal width)
    assert err.startswith("Error: The dask workers cannot read /vsimem/") and err.count("Error") == 1
    assert "storage every worker mounts" in err and "Traceback" not in err


# -- evaluate ---------------------------------------------------------------------------------------


@pytest.fixture()
def class_map(tmp_path) -> Path:
    from affine import Affine

    from rasterlearn.grid import Grid
    from rasterlearn.io.writer import write_array

    rng = np.random.default_rng(8)
    m = rng.integers(0, 3, (60, 70)).astype("uint8")
    m[:4] = 255  # nodata rows
    grid = Grid(60, 70, Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")
    return write_array(
        tmp_path / "map.tif", m[None], grid, nodata=255, category_names={0: "bare", 1: "water", 2: "trees"}
    )


def _truths(class_map: Path, tmp_path: Path) -> dict[str, dict]:
    """Vector truth with an AOI polygon, raster truth on the grid (codes matched by name), resampled truth."""
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(class_map) as ds:
        prof, data = ds.profile, ds.read(1)
        x0, y0, x1, y1 = ds.bounds
    rng = np.random.default_rng(9)
    truth = np.where(rng.random(data.shape) < 0.7, data, rng.integers(0, 3, data.shape)).astype("uint8")
    truth[10:14, :] = 7  # a code the map does not know
    on_grid = tmp_path / "truth.tif"
    with rasterio.open(on_grid, "w", **prof) as ds:
        ds.write(truth + 1, 1)  # codes 1..3 (8: unnamed)
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(
        coarse,
        "w",
        **{**prof, "width": 35, "height": 30, "transform": prof["transform"] @ rasterio.Affine.scale(2)},
    ) as ds:
        ds.write(truth[::2, ::2], 1)
    polys = gpd.GeoDataFrame(
        {"kind": ["water", "trees", "bare"]},
        geometry=[
            box(x0 + 50, y0 + 50, x0 + 300, y0 + 400),
            box(x0 + 320, y1 - 300, x1 - 40, y1 - 20),
            box(x0, y1 - 90, x0 + 200, y1),
        ],
        crs="EPSG:32633",
    )
    polys.to_file(tmp_path / "truth.gpkg")
    aoi = box(x0 + 20, y0 + 20, x1 - 60, y1 - 30).buffer(-5)
    return {
        "vector": {"truth": tmp_path / "truth.gpkg", "attribute": "kind", "aoi": aoi, "all_touched": True},
        "raster": {"truth": on_grid, "truth_classes": "1=bare,2=water,3=trees"},
        "resampled": {"truth": coarse},
    }


def test_evaluate_on_dask_equals_local(class_map, tmp_path, dask_executor):
    from rasterlearn.evaluate import evaluate_map

    for name, kw in _truths(class_map, tmp_path).items():
        truth = kw.pop("truth")
        local = evaluate_map(class_map, truth, window_size=16, output=tmp_path / f"{name}_l.json", **kw)
        seen: list[int] = []
        remote = evaluate_map(
            class_map,
            truth,
            window_size=16,
            output=tmp_path / f"{name}_d.json",
            executor=dask_executor,
            progress=seen.append,
            **kw,
        )
        assert remote == local, name
        assert (tmp_path / f"{name}_l.json").read_bytes() == (tmp_path / f"{name}_d.json").read_bytes()
        assert sum(seen) == 60 * 70 or name == "vector"  # the AOI clips the windows
        assert 0 < local["evaluation"]["pixels_compared"] < 60 * 70
    assert local["evaluation"]["truth_reprojected"] is True


def test_cli_evaluate_on_a_scheduler(class_map, tmp_path, dask_executor, capsys):
    from rasterlearn.cli import main

    truth = _truths(class_map, tmp_path)["raster"]["truth"]
    base = [
        "-q",
        "evaluate",
        str(class_map),
        "--truth",
        str(truth),
        "--truth-names",
        "1=bare,2=water,3=trees",
    ]
    assert main([*base, "-o", str(tmp_path / "l.json")]) == 0
    address = dask_executor.client.scheduler_info()["address"]
    assert main([*base, "-o", str(tmp_path / "d.json"), "--scheduler", address]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "l.json").read_text()) == json.loads((tmp_path / "d.json").read_text())


def test_evaluate_background_without_a_background_class_is_an_error(class_map, tmp_path):
    from rasterlearn.evaluate import evaluate_map
    from rasterlearn.labels import ClassInfo, ClassSchema

    truth = _truths(class_map, tmp_path)["vector"]
    names = ("bare", "water", "trees")
    schema = ClassSchema(tuple(ClassInfo(c, n, "#000000") for c, n in enumerate(names)), 255, None)
    with pytest.raises(
        InputError, match=r"have no background class; use unlabelled=.ignore. \(--unlabelled ignore\)"
    ):
        evaluate_map(class_map, truth["truth"], attribute="kind", schema=schema, unlabelled="background")
    ok = evaluate_map(class_map, truth["truth"], attribute="kind", schema=schema, unlabelled="ignore")
    assert ok["evaluation"]["unlabelled"] == "ignore" and ok["evaluation"]["pixels_compared"] > 0
