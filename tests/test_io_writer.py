"""Block-wise COG writer: exact placement, COG layout, metadata, class tables, atomicity, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from rasterlearn.errors import InputError, OutputError
from rasterlearn.grid import Grid, Window, plan_tiles
from rasterlearn.io.writer import BlockWriter, cog_profile, hex_to_rgba, write_array
from tests.conftest import coord_image

GRID = Grid(70, 90, Affine(2.0, 0.0, 300_000.0, 0.0, -2.0, 5_000_000.0), "EPSG:32632")


def _is_cog(path) -> bool:
    with rasterio.open(path) as ds:
        return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_blocks_in_any_order_land_exactly(tmp_path) -> None:
    truth = coord_image(70, 90)
    out = tmp_path / "out.tif"
    windows = list(plan_tiles(GRID, 32, 32))[::-1]  # reverse order, edge windows extend past the grid
    with BlockWriter(out, GRID, 2, "uint16", nodata=65535, band_descriptions=["row", "col"]) as w:
        for win in windows:
            block = np.full((2, win.height, win.width), 65535, dtype="uint16")
            inner = win.intersection(GRID.window)
            assert inner is not None
            sub = inner.relative_to(win)
            block[:, sub.slices()[0], sub.slices()[1]] = truth[:, inner.slices()[0], inner.slices()[1]]
            w.write(block, win)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), truth)
        assert ds.crs.to_epsg() == 32632
        assert ds.transform == GRID.transform
        assert ds.nodata == 65535
        assert ds.descriptions == ("row", "col")
    assert _is_cog(out)
    assert not list(tmp_path.glob(".*"))  # partial, progress and temporary files are gone


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_dtypes_and_compression(tmp_path, dtype) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((3, 70, 90)) * 100).astype(dtype)
    out = write_array(tmp_path / f"{dtype}.tif", data, GRID, tags={"model": "x", "params": {"a": 1}})
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.dtypes[0] == dtype
        assert ds.compression is not None and ds.compression.name.lower() == "zstd"
        assert ds.tags()["model"] == "x" and json.loads(ds.tags()["params"]) == {"a": 1}


def test_large_output_gets_overviews(tmp_path) -> None:
    grid = Grid(1100, 1300, Affine(1, 0, 0, 0, -1, 0), "EPSG:3857")
    data = np.zeros((1, 1100, 1300), dtype="uint8")
    data[0, ::7] = 5
    out = write_array(tmp_path / "big.tif", data, grid, blocksize=256)
    with rasterio.open(out) as ds:
        assert ds.overviews(1), "COG should carry internal overviews"
        assert ds.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(ds.read(1), data[0])


def test_class_map_colours_and_names(tmp_path) -> None:
    data = np.zeros((1, 70, 90), dtype="uint8")
    data[0, 10:20] = 1
    data[0, 30:] = 2
    out = write_array(
        tmp_path / "classes.tif",
        data,
        GRID,
        nodata=255,
        colormap={0: "#000000", 1: "#1f77b4", 2: (44, 160, 44)},
        category_names={0: "background", 1: "water", 2: "forest"},
    )
    with rasterio.open(out) as ds:
        cmap = ds.colormap(1)
        assert cmap[1] == (31, 119, 180, 255) and cmap[2] == (44, 160, 44, 255)
        assert ds.compression.name.lower() == "deflate"
    aux = (tmp_path / "classes.tif.aux.xml").read_text()
    assert "<Category>water</Category>" in aux and "GDALRasterAttributeTable" in aux
    qml = (tmp_path / "classes.qml").read_text()
    assert 'label="forest"' in qml and 'color="#2ca02c"' in qml
    # GDAL itself reads the category names back from the sidecar
    with rasterio.open(out) as ds:
        assert "water" in (tmp_path / "classes.tif.aux.xml").read_text()
        assert ds.count == 1


def test_scales_offsets_recorded(tmp_path) -> None:
    data = np.arange(70 * 90, dtype="uint16").reshape(1, 70, 90)
    out = write_array(tmp_path / "scaled.tif", data, GRID, scales=[0.001], offsets=[-1.0])
    with rasterio.open(out) as ds:
        assert ds.scales == (0.001,) and ds.offsets == (-1.0,)


def test_errors(tmp_path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        BlockWriter(tmp_path / "no" / "x.tif", GRID, 1, "uint8")
    with pytest.raises(InputError, match="colour table"):
        BlockWriter(tmp_path / "x.tif", GRID, 2, "uint8", colormap={0: "#000000"})
    (tmp_path / "exists.tif").write_bytes(b"x")
    with pytest.raises(OutputError, match="exists"):
        BlockWriter(tmp_path / "exists.tif", GRID, 1, "uint8", overwrite=False)
    with BlockWriter(tmp_path / "y.tif", GRID, 1, "uint8") as w, pytest.raises(InputError, match="shape"):
        w.write(np.zeros((1, 3, 3), dtype="uint8"), Window(0, 0, 4, 4))
    with (
        BlockWriter(tmp_path / "z.tif", GRID, 1, "uint8") as w,
        pytest.raises(InputError, match="do not fit"),
    ):
        w.write(np.full((1, 4, 4), 300.0), Window(0, 0, 4, 4))
    assert hex_to_rgba("#ff000080") == (255, 0, 0, 128)
    with pytest.raises(InputError):
        hex_to_rgba("red")


def test_failure_never_leaves_final_name(tmp_path) -> None:
    out = tmp_path / "fail.tif"
    with pytest.raises(RuntimeError), BlockWriter(out, GRID, 1, "uint8") as w:
        w.write(np.ones((1, 10, 10), dtype="uint8"), Window(0, 0, 10, 10))
        w.mark_done("0:0")
        w.commit()
        raise RuntimeError("killed")
    assert not out.exists()
    assert w.partial_path.exists()  # kept, so a resumable job can continue
    other = tmp_path / "nothing.tif"
    with pytest.raises(RuntimeError), BlockWriter(other, GRID, 1, "uint8") as w2:
        w2.write(np.ones((1, 10, 10), dtype="uint8"), Window(0, 0, 10, 10))
        raise RuntimeError("killed")
    assert not w2.partial_path.exists()  # nothing committed: nothing to resume, nothing left behind


def test_resume_keeps_committed_blocks_and_discards_other_parameters(tmp_path) -> None:
    out = tmp_path / "resume.tif"
    truth = coord_image(70, 90)
    wins = list(plan_tiles(GRID, 32, 32))
    w = BlockWriter(out, GRID, 2, "uint16", resume=True, fingerprint="abc")
    for win in wins[:3]:
        inner = win.intersection(GRID.window)
        w.write(truth[:, inner.slices()[0], inner.slices()[1]], inner)
        w.mark_done(str(win.to_tuple()), commit_every_s=0)  # commit every time
    w.write(np.zeros((2, 32, 32), dtype="uint16"), wins[3])  # written but never committed
    w._ds.close()  # simulate a crash: no close() and no commit of the last block
    assert not out.exists()

    again = BlockWriter(out, GRID, 2, "uint16", resume=True, fingerprint="abc")
    assert again.done == {str(win.to_tuple()) for win in wins[:3]}
    for win in wins:
        if again.is_done(str(win.to_tuple())):
            continue
        inner = win.intersection(GRID.window)
        again.write(truth[:, inner.slices()[0], inner.slices()[1]], inner)
        again.mark_done(str(win.to_tuple()))
    again.close()
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), truth)

    # a partial written with other parameters is discarded, never mixed
    w3 = BlockWriter(out, GRID, 2, "uint16", resume=True, fingerprint="abc")
    w3.mark_done("x", commit_every_s=0)
    w3._ds.close()
    w4 = BlockWriter(out, GRID, 2, "uint16", resume=True, fingerprint="other")
    assert w4.done == frozenset()
    w4.abort(keep_partial=False)
    assert not w4.partial_path.exists()


def test_cog_profile_choices() -> None:
    assert cog_profile("uint8", categorical=True)["COMPRESS"] == "DEFLATE"
    assert cog_profile("float32")["COMPRESS"] == "ZSTD"
    assert cog_profile("float32")["PREDICTOR"] == "YES"
    assert cog_profile("uint8", compress="none")["COMPRESS"] == "NONE"
