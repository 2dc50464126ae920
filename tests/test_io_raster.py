"""Windowed, nodata-aware raster reading."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from rasterlearn.errors import EmptyInputError, InputError, InputNotFoundError, ReadError
from rasterlearn.grid import Window, plan_tiles
from rasterlearn.io.raster import RasterReader, band_statistics
from tests.conftest import coord_image


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_dtypes_roundtrip_untouched(make_raster, dtype: str) -> None:
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else np.finfo(dtype)
    rng = np.random.default_rng(1)
    data = rng.uniform(float(info.min) / 2, float(info.max) / 2, size=(3, 20, 30)).astype(dtype)
    path = make_raster(data)
    with RasterReader(path) as r:
        block = r.read()
        assert block.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(block.data, data)
        assert block.valid.all()


def test_coordinates_roundtrip_through_windows(coord_raster) -> None:
    with RasterReader(coord_raster) as r:
        assert r.grid.shape == (37, 53)
        for win in plan_tiles(r.grid, 16, 12):
            block = r.read(win)
            rows, cols = np.mgrid[win.row_off : win.row_stop, win.col_off : win.col_stop]
            inside = (rows < 37) & (cols < 53)
            np.testing.assert_array_equal(block.valid, inside)
            np.testing.assert_array_equal(block.data[0][inside], rows[inside])
            np.testing.assert_array_equal(block.data[1][inside], cols[inside])
            assert (block.data[:, ~inside] == 65535).all()  # boundless fill = nodata


def test_boundless_negative_offsets(coord_raster) -> None:
    with RasterReader(coord_raster) as r:
        block = r.read(Window(-3, -2, 6, 5))
        assert block.data.shape == (2, 6, 5)
        assert not block.valid[:3].any() and not block.valid[:, :2].any()
        assert block.valid[3:, 2:].all()
        assert block.data[0, 3, 2] == 0 and block.data[1, 5, 4] == 2
        outside = r.read(Window(100, 100, 4, 4))
        assert not outside.valid.any()


def test_nodata_nan_and_band_masks(make_raster) -> None:
    data = np.ones((2, 4, 4), dtype="float32")
    data[0, 0, 0] = -9999
    data[1, 1, 1] = np.nan
    data[1, 2, 2] = np.inf
    path = make_raster(data, nodata=-9999)
    with RasterReader(path) as r:
        block = r.read(band_masks=True)
        assert block.band_valid is not None
        assert not block.band_valid[0, 0, 0] and block.band_valid[1, 0, 0]
        assert not block.band_valid[1, 1, 1] and not block.band_valid[1, 2, 2]
        assert block.valid.sum() == 13


def test_nan_without_declared_nodata(make_raster) -> None:
    data = np.zeros((1, 3, 3), dtype="float64")
    data[0, 1, 1] = np.nan
    with RasterReader(make_raster(data)) as r:
        assert r.nodata is None
        block = r.read(Window(-1, -1, 5, 5))
        assert np.isnan(block.data[0, 0, 0])  # float fill without nodata is NaN
        assert block.valid.sum() == 8


def test_alpha_band_is_mask_and_excluded(tmp_path) -> None:
    rgb = np.full((3, 8, 8), 100, dtype="uint8")
    alpha = np.full((1, 8, 8), 255, dtype="uint8")
    alpha[0, :2] = 0
    path = tmp_path / "rgba.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=4,
        dtype="uint8",
        crs="EPSG:3857",
        transform=Affine(1, 0, 10, 0, -1, 10),
        photometric="RGB",
        alpha="YES",
    ) as ds:
        ds.write(np.concatenate([rgb, alpha]))
    with RasterReader(path) as r:
        assert r.alpha_bands == [4]
        assert r.band_indexes == [1, 2, 3]
        block = r.read()
        assert block.data.shape == (3, 8, 8)
        assert not block.valid[:2].any() and block.valid[2:].all()


def test_per_dataset_mask(tmp_path) -> None:
    path = tmp_path / "masked.tif"
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=6,
            height=6,
            count=2,
            dtype="uint16",
            crs="EPSG:32633",
            transform=Affine(1, 0, 10, 0, -1, 10),
        ) as ds,
    ):
        ds.write(np.full((2, 6, 6), 7, dtype="uint16"))
        m = np.full((6, 6), 255, dtype="uint8")
        m[:, :3] = 0
        ds.write_mask(m)
    with RasterReader(path) as r:
        block = r.read()
        assert not block.valid[:, :3].any() and block.valid[:, 3:].all()


def test_band_selection_by_index_and_description(make_raster) -> None:
    data = np.stack([np.full((4, 4), i, dtype="uint8") for i in range(1, 5)])
    path = make_raster(data, descriptions=["blue", "green", "red", "nir"])
    with RasterReader(path, bands=["nir", "red", 2]) as r:
        assert r.band_indexes == [4, 3, 2]
        assert r.band_names == ["nir", "red", "green"]
        assert r.read().data[:, 0, 0].tolist() == [4, 3, 2]
    with pytest.raises(InputError, match=r"1\.\.4"):
        RasterReader(path, bands=[5])
    with pytest.raises(InputError, match="blue"):
        RasterReader(path, bands=["swir"])


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="not found"):
        RasterReader(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(ReadError, match="Cannot open"):
        RasterReader(bad)
    # both are also built-in errors
    with pytest.raises(FileNotFoundError):
        RasterReader(tmp_path / "nope.tif")
    with pytest.raises(OSError):
        RasterReader(bad)


def test_reopen_gives_independent_handle(coord_raster) -> None:
    with RasterReader(coord_raster, bands=[2]) as r:
        other = r.reopen()
        assert other.band_indexes == [2] and other.dataset is not r.dataset
        other.close()
        assert r.read(Window(0, 0, 1, 3)).data[0, 0].tolist() == [0, 1, 2]


def test_describe(make_raster) -> None:
    path = make_raster(coord_image(32, 32), nodata=0, tiled=True, blockxsize=16, blockysize=16)
    with RasterReader(path) as r:
        d = r.describe()
    assert d["width"] == 32 and d["epsg"] == 32633 and d["nodata"] == 0.0
    assert d["transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0]
    assert [b["index"] for b in d["bands"]] == [1, 2] and d["bands"][0]["dtype"] == "uint16"
    assert d["tiled"] and d["block_shapes"] == [[16, 16]]


def test_statistics_are_nodata_aware_and_reproducible(make_raster) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(1000, 50, size=(2, 120, 110)).astype("float32")
    data[:, :40] = -9999  # a nodata stripe must not pull the mean down
    path = make_raster(data, nodata=-9999)
    with RasterReader(path) as r:
        s1 = band_statistics(r, sample_size=5000, window_size=32, max_windows=12, seed=3)
        s2 = band_statistics(r, sample_size=5000, window_size=32, max_windows=12, seed=3)
    assert s1 == s2
    for s in s1:
        assert abs(s.mean - 1000) < 10 and abs(s.std - 50) < 8
        assert s.min > 700 and s.p2 < s.mean < s.p98
        assert 0 < s.count <= 5000 + 12


def test_statistics_never_read_the_whole_raster(make_raster, monkeypatch) -> None:
    path = make_raster(np.ones((1, 128, 128), dtype="uint8"))
    with RasterReader(path) as r:
        seen: list[Window] = []
        real = r.read

        def spy(window=None, **kw):
            seen.append(window)
            return real(window, **kw)

        monkeypatch.setattr(r, "read", spy)
        band_statistics(r, window_size=16, max_windows=5)
    assert len(seen) == 5 and all(w is not None and w.size <= 256 for w in seen)


def test_statistics_without_valid_pixels(make_raster) -> None:
    path = make_raster(np.zeros((1, 8, 8), dtype="uint8"), nodata=0)
    with RasterReader(path) as r, pytest.raises(EmptyInputError, match="No valid pixels"):
        band_statistics(r)


@pytest.mark.realdata
def test_reads_every_shared_raster(shared_data) -> None:
    tifs = sorted(shared_data.glob("*/*.tif"))
    assert tifs
    for path in tifs:
        with RasterReader(path) as r:
            block = r.read(Window(-5, -5, 40, 40))
            assert block.data.dtype == np.dtype(r.dtype)
            assert not block.valid[:5].any()
            assert r.describe()["bands"]


@pytest.mark.realdata
def test_landsat_nodata_fraction(shared_data) -> None:
    with RasterReader(shared_data / "landcover_nc" / "landsat7_5band.tif") as r:
        valid = r.read().valid
    frac = 1 - valid.mean()
    assert 0.10 < frac < 0.20  # README: about 15 % of the frame is nodata (rotated scene edge)


def test_alpha_band_selected_as_data_is_not_a_mask(tmp_path, caplog) -> None:
    """An RGBN uint8 file written with default options declares band 4 as alpha; NIR = 0 must stay valid."""
    data = np.full((4, 6, 6), 50, dtype="uint8")
    data[3, 0, :] = 0  # dark NIR pixels, not nodata
    path = tmp_path / "rgbn.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=6,
        height=6,
        count=4,
        dtype="uint8",
        crs="EPSG:32614",
        transform=Affine(5, 0, 10, 0, -5, 10),
    ) as ds:
        ds.write(data)
    import logging

    with caplog.at_level(logging.INFO, logger="rasterlearn"):
        default = RasterReader(path)
    assert default.band_indexes == [1, 2, 3]
    assert any("flagged as alpha" in r.message for r in caplog.records)  # never dropped silently
    default.close()
    with RasterReader(path, bands=[1, 2, 3, 4]) as r:
        block = r.read()
        assert block.data.shape == (4, 6, 6)
        assert block.valid.all()


def test_gdal_cache_is_bounded_inside_and_restored_after() -> None:
    from rasterio.env import get_gdal_config

    from rasterlearn.io.raster import gdal_cache

    before = get_gdal_config("GDAL_CACHEMAX")
    with gdal_cache(32):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 32 * 2**20  # bytes: 32 MiB, not 32 bytes
    assert get_gdal_config("GDAL_CACHEMAX") == before


def test_gdal_cache_keeps_an_enclosing_bound() -> None:
    import rasterio.env

    from rasterlearn.io.raster import GDAL_CACHE_MB, gdal_cache

    with gdal_cache(16):
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 16 * 2**20
        with gdal_cache():  # e.g. the writer's COG conversion inside a predict job
            assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 16 * 2**20
        with gdal_cache(8):
            assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 8 * 2**20
    with gdal_cache():
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == GDAL_CACHE_MB * 2**20
