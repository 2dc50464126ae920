"""Many scenes in one job: per-scene outputs and status, failures isolated, rerun maps only what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.batch import predict_scenes, scene_outputs
from rasterlearn.errors import InputError
from rasterlearn.io.vrt import mosaic_vrt
from tests.test_predict import _package


@pytest.fixture()
def scenes(tmp_path: Path, make_raster) -> list[Path]:
    rng = np.random.default_rng(2)
    a = make_raster(rng.integers(1, 250, (3, 64, 80)).astype("uint8"), name="a.tif", nodata=0)
    # b lies east of a on the same grid (the make_raster origin shifted by 80 px of 10 m)
    b = make_raster(rng.integers(1, 250, (3, 48, 64)).astype("uint8"), name="b.tif", nodata=0)
    with rasterio.open(b, "r+") as ds:
        t = ds.transform
        ds.transform = rasterio.Affine(t.a, 0, t.c + 80 * t.a, 0, t.e, t.f)
    return [a, b]


def test_scenes_mapped_like_single_runs_with_summary_and_mosaic(scenes, tmp_path: Path) -> None:
    from rasterlearn.predict import predict_package

    pkg = _package(tmp_path)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    seen: list[int] = []
    res = predict_scenes(
        pkg, [*scenes, broken], tmp_path / "maps", mosaic=True, blocksize=32, progress=seen.append
    )
    assert [s.status for s in res.scenes] == ["done", "done", "failed"]
    assert "broken.tif" in (res.failed[0].error or "")
    single = predict_package(pkg, scenes[0], tmp_path / "single_a.tif", blocksize=32)
    with rasterio.open(res.scenes[0].output) as m, rasterio.open(single.map_path) as s:
        np.testing.assert_array_equal(m.read(), s.read())
        assert m.transform == s.transform and m.crs == s.crs
    summary = json.loads((tmp_path / "maps" / "scenes.json").read_text())
    assert (summary["done"], summary["failed"]) == (2, 1)
    assert sum(seen) >= 64 * 80 + 48 * 64  # pixels of both scenes reported
    # the mosaic covers both maps, east of a is b, with the class colours carried over
    with rasterio.open(res.mosaic_path) as mos, rasterio.open(res.scenes[1].output) as mb:
        assert (mos.height, mos.width) == (64, 144)
        np.testing.assert_array_equal(mos.read(1)[:48, 80:], mb.read(1))
        assert mos.read(1)[50:, 100].tolist() == [mos.nodata] * 14
        assert mos.colormap(1)[1][:3] == mb.colormap(1)[1][:3]
    # a rerun maps only the failed scene (still failing) and skips the finished maps
    mtime = Path(res.scenes[0].output).stat().st_mtime_ns
    again = predict_scenes(pkg, [*scenes, broken], tmp_path / "maps", blocksize=32)
    assert [s.status for s in again.scenes] == ["skipped", "skipped", "failed"]
    assert Path(res.scenes[0].output).stat().st_mtime_ns == mtime


def test_scene_names_must_be_unique_and_outputs_not_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"Two scenes would write a\.tif: x/a\.tif and y/a\.tif"):
        scene_outputs(["x/a.tif", "y/a.tif"], tmp_path)
    assert scene_outputs(["https://h/p/S2.tif?sig=1"], tmp_path) == {
        "https://h/p/S2.tif?sig=1": tmp_path / "S2.tif"
    }


def test_mosaic_refuses_other_pixel_sizes(tmp_path: Path, make_raster) -> None:
    a = make_raster(np.ones((1, 8, 8), "uint8"), name="m1.tif")
    b = make_raster(np.ones((1, 8, 8), "uint8"), name="m2.tif")
    with rasterio.open(b, "r+") as ds:
        t = ds.transform
        ds.transform = rasterio.Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f)
    with pytest.raises(InputError, match=r"Cannot mosaic .*m2\.tif.*pixel size"):
        mosaic_vrt([a, b], tmp_path / "m.vrt")


def test_cli_predict_many_scenes(scenes, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    pkg = _package(tmp_path)
    listing = tmp_path / "scenes.txt"
    listing.write_text("a.tif\n# a comment\nb.tif\n")
    out = tmp_path / "maps"
    assert main(["-q", "predict", str(pkg), str(listing), "--out-dir", str(out), "--mosaic"]) == 0, (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.tif", "b.tif"] and (out / "mosaic.vrt").exists()
    # a glob, a missing scene among good ones: the others are mapped, the failure is reported, exit 2
    out2 = tmp_path / "maps2"
    code = main(
        ["predict", str(pkg), str(tmp_path / "[ab].tif"), str(tmp_path / "gone.tif"), "--out-dir", str(out2)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "1 of 3 scene(s) failed" in err and "gone.tif" in err
    assert (out2 / "a.tif").exists() and (out2 / "b.tif").exists()
    with rasterio.open(out / "a.tif") as x, rasterio.open(out2 / "a.tif") as y:
        np.testing.assert_array_equal(x.read(), y.read())
    # several rasters need --out-dir
    assert main(["predict", str(pkg), *map(str, scenes)]) == 2
    assert "--out-dir" in capsys.readouterr().err


@pytest.mark.slow  # starts a LocalCluster and loads the model in each worker
def test_cli_predict_many_scenes_on_dask_workers(scenes, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    pkg = _package(tmp_path)
    a, b = tmp_path / "local", tmp_path / "dask"
    assert main(["-q", "predict", str(pkg), *map(str, scenes), "--out-dir", str(a)]) == 0
    assert main(["-q", "predict", str(pkg), *map(str, scenes), "--out-dir", str(b), "--workers", "2"]) == 0, (
        capsys.readouterr().err
    )
    for name in ("a.tif", "b.tif"):
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            np.testing.assert_array_equal(x.read(), y.read())
            assert x.transform == y.transform
