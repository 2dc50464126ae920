"""The one validity policy (io/validity.py): its functions, and that RasterReader's masks are exactly them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, MaskFlags

from rasterlearn.grid import Window
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.validity import (
    MaskSources,
    apply_assumed_nodata,
    band_valid,
    block_validity,
    mask_sources,
)


def _block() -> np.ndarray:
    """2 float32 bands, 3 x 4 px: band 0 holds its nodata -9 at (0, 0) and NaN at (1, 1); band 1 +inf at (2, 3)
    and the value 7 at (0, 2) and (1, 0)."""
    data = np.arange(24, dtype="float32").reshape(2, 3, 4) + 10
    data[0, 0, 0] = -9
    data[0, 1, 1] = np.nan
    data[1, 2, 3] = np.inf
    data[1, 0, 2] = data[1, 1, 0] = 7
    return data


def test_band_valid_declared_nodata_nan_and_integers() -> None:
    d = _block()
    np.testing.assert_array_equal(np.argwhere(~band_valid(d[0], -9.0)), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(np.argwhere(~band_valid(d[0], None)), [[1, 1]])  # NaN is never valid
    np.testing.assert_array_equal(np.argwhere(~band_valid(d[0], float("nan"))), [[1, 1]])
    ints = np.array([[0, 3], [3, 255]], dtype="uint8")
    np.testing.assert_array_equal(band_valid(ints, 3.0), [[True, False], [False, True]])
    assert band_valid(ints, None).all() and band_valid(ints, None).dtype == bool


@pytest.mark.parametrize("band_masks", [False, True])
def test_block_validity_is_every_band_valid(band_masks) -> None:
    d = _block()
    valid, per_band = block_validity(d, [-9.0, None], band_masks=band_masks)
    expect = np.ones((3, 4), bool)
    expect[0, 0] = expect[1, 1] = expect[2, 3] = False
    np.testing.assert_array_equal(valid, expect)
    if band_masks:
        assert per_band is not None and per_band.shape == d.shape
        np.testing.assert_array_equal(np.argwhere(~per_band[0]), [[0, 0], [1, 1]])
        np.testing.assert_array_equal(np.argwhere(~per_band[1]), [[2, 3]])
        np.testing.assert_array_equal(per_band.all(axis=0), valid)
    else:
        assert per_band is None


def test_gdal_masks_replace_the_declared_nodata_test_but_not_nan() -> None:
    d = _block()
    masks = np.full(d.shape, 255, dtype="uint8")
    masks[1, 2, 0] = 0
    valid, per_band = block_validity(d, [-9.0, None], gdal_masks=masks, band_masks=True)
    # -9 at (0, 0) is GDAL's business now (its mask says valid); NaN/inf stay invalid, (2, 0) is masked
    assert valid[0, 0]
    np.testing.assert_array_equal(np.argwhere(~valid), [[1, 1], [2, 0], [2, 3]])
    assert per_band is not None
    np.testing.assert_array_equal(np.argwhere(~per_band[1]), [[2, 0], [2, 3]])


def test_alpha_and_assumed_nodata_apply_to_every_band() -> None:
    d = _block()
    alpha = np.full((1, 3, 4), 255, dtype="uint8")
    alpha[0, 0, 3] = 0
    valid, per_band = block_validity(d, [None, None], alpha=alpha, assumed_nodata=7.0, band_masks=True)
    np.testing.assert_array_equal(np.argwhere(~valid), [[0, 2], [0, 3], [1, 0], [1, 1], [2, 3]])
    assert per_band is not None
    assert not per_band[:, 0, 3].any()  # transparent: no band is valid
    assert per_band[0, 0, 2] and not per_band[1, 0, 2]  # the assumed nodata is per band
    # apply_assumed_nodata: a pixel where any band holds it; None leaves the mask as it is
    ones = np.ones((3, 4), bool)
    np.testing.assert_array_equal(np.argwhere(~apply_assumed_nodata(ones, d, 7.0)), [[0, 2], [1, 0]])
    assert apply_assumed_nodata(ones, d, None) is ones


def test_mask_sources_from_gdal_mask_flags() -> None:
    nodata, valid = [MaskFlags.nodata], [MaskFlags.all_valid]
    alpha, per_ds = [MaskFlags.alpha, MaskFlags.per_dataset], [MaskFlags.per_dataset]
    assert mask_sources([nodata, nodata], [1, 2], []) == MaskSources(False, (), ())
    assert mask_sources([valid, per_ds], [1, 2], []) == MaskSources(True, (), ())
    # RGB + alpha: GDAL takes band 4 as the mask of bands 1-3
    assert mask_sources([alpha] * 3 + [valid], [1, 2, 3], [4]) == MaskSources(True, (), ())
    # RGBN + alpha: GDAL does not, so the alpha band is read beside the data
    assert mask_sources([valid] * 5, [1, 2, 3, 4], [5]) == MaskSources(False, (5,), ())
    # an alpha band chosen as data is not a mask
    assert mask_sources([alpha] * 3 + [valid], [1, 2, 3, 4], [4]) == MaskSources(False, (), (4,))


def _write(path: Path, data: np.ndarray, *, mask=None, colorinterp=None, **profile) -> Path:
    prof = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0),
        **profile,
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if mask is not None:
            ds.write_mask(mask)
    if colorinterp is not None:
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = colorinterp
    return path


def _case(kind: str, tmp_path: Path) -> tuple[Path, list[int] | None]:
    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 6, (5, 24, 20)).astype("uint8")
    opaque = np.where(rng.random((24, 20)) > 0.25, 255, 0).astype("uint8")
    p = tmp_path / f"{kind}.tif"
    if kind == "nodata":
        return _write(p, u8[:3], nodata=0), None
    if kind == "internal-mask":
        return _write(p, u8[:3], mask=opaque), None
    if kind == "float-nan":
        f = rng.normal(size=(2, 24, 20)).astype("float32")
        f[0, rng.random((24, 20)) > 0.8] = np.nan
        f[1, 3, 4] = -np.inf
        return _write(p, f, nodata=float("nan")), None
    if kind == "rgba":
        ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        return _write(p, np.concatenate([u8[:3], opaque[None]]), photometric="RGB", colorinterp=ci), None
    if kind == "rgbn-alpha":
        ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.gray, ColorInterp.alpha]
        return _write(p, np.concatenate([u8[:4], opaque[None]]), colorinterp=ci), None
    if kind == "rgba-as-data":
        ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        return _write(p, u8[:4], photometric="RGB", colorinterp=ci, nodata=0), [1, 2, 3, 4]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["nodata", "internal-mask", "float-nan", "rgba", "rgbn-alpha", "rgba-as-data"]
)
@pytest.mark.parametrize("assumed", [None, 3.0])
def test_reader_masks_are_the_policy_over_what_gdal_reads(kind, assumed, tmp_path) -> None:
    path, bands = _case(kind, tmp_path)
    win = Window(2, 3, 16, 12)
    with RasterReader(path, bands, nodata=assumed) as r:
        got = r.read(win, band_masks=True)
        ds, rw = r.dataset, rasterio.windows.Window(3, 2, 12, 16)
        plan = mask_sources(ds.mask_flag_enums, r.band_indexes, r.alpha_bands)
        data = ds.read(r.band_indexes, window=rw)
        valid, per_band = block_validity(
            data,
            [b.nodata for b in r.bands],
            gdal_masks=ds.read_masks(r.band_indexes, window=rw) if plan.gdal_mask else None,
            alpha=ds.read(list(plan.alpha_mask), window=rw) if plan.alpha_mask else None,
            assumed_nodata=r.assumed_nodata,
            band_masks=True,
        )
    np.testing.assert_array_equal(got.data, data)
    np.testing.assert_array_equal(got.valid, valid)
    np.testing.assert_array_equal(got.band_valid, per_band)
    assert 0 < valid.sum() < valid.size  # every case masks some pixels, not all
    with rasterio.open(path) as ds:  # what GDAL's mask or the alpha band says is invalid stays invalid
        if kind in ("rgba", "rgbn-alpha"):
            assert not valid[ds.read(ds.count, window=rw) == 0].any()
        elif kind == "internal-mask":
            assert not valid[ds.dataset_mask(window=rw) == 0].any()


# -- warped reads (a stack's resampled date, a truth raster on the map grid) take the same policy ---------------


def _warped_pair(tmp_path: Path, nodata: float | None) -> tuple[Path, Path]:
    """A 30 x 40 px reference date and a coarser (20 m) float date over part of it, with NaN and -inf."""
    ref = rasterio.Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    rng = np.random.default_rng(11)
    a = rng.normal(size=(2, 30, 40)).astype("float32")
    b = rng.normal(size=(2, 12, 12)).astype("float32")
    b[0, 2:4, 5] = np.nan
    b[1, 7, 1] = -np.inf
    if nodata is not None:
        b[:, 9, 9:11] = nodata
    pa = _write(tmp_path / "a.tif", a, transform=ref, nodata=nodata)
    pb = _write(tmp_path / "b.tif", b, transform=ref @ rasterio.Affine(2, 0, 7, 0, 2, 3), nodata=nodata)
    return pa, pb


def _former_warped_mask(vrt, indexes, rw, alpha: int | None) -> np.ndarray:
    """What io/stack.py and label_grid.py computed inline before they called block_validity."""
    part = vrt.read(indexes, window=rw)
    if alpha is not None:
        ok = np.broadcast_to(vrt.read(alpha, window=rw) > 0, part.shape).copy()
    else:
        ok = vrt.read_masks(indexes, window=rw) > 0
    if part.dtype.kind == "f":
        ok &= np.isfinite(part)
    return ok


@pytest.mark.parametrize("nodata", [None, -5.0])
def test_warped_stack_date_masks_are_unchanged(nodata, tmp_path) -> None:
    from rasterlearn.io.stack import StackReader

    pa, pb = _warped_pair(tmp_path, nodata)
    with StackReader([pa, pb]) as s:
        warped = s._dates[1]
        assert s.resampled and (warped._alpha is None) == (nodata is not None)
        block = s.read(Window(-3, -2, 36, 46), band_masks=True)
        rw = rasterio.windows.Window(0, 0, 40, 30)
        former = _former_warped_mask(warped._vrt, warped.band_indexes, rw, warped._alpha)
    assert block.band_valid is not None
    got = block.band_valid[2:, 3:33, 2:42]
    np.testing.assert_array_equal(got, former)
    assert not block.band_valid[2:, :3].any() and not block.band_valid[2:, :, :2].any()  # outside the grid
    assert 0 < got.sum() < got.size and got[0].sum() != got[1].sum()  # footprint, NaN and -inf per band


@pytest.mark.parametrize("nodata", [None, -5.0])
def test_warped_truth_masks_are_the_vrt_mask_or_alpha_and_finite(nodata, tmp_path) -> None:
    from rasterlearn.label_grid import RasterOnGrid

    pa, pb = _warped_pair(tmp_path, nodata)
    with RasterReader(pa) as r:
        grid = r.grid
    src = RasterOnGrid(pb, grid, band=1)
    try:
        assert src._vrt is not None
        _, valid = src.read(Window(0, 0, 30, 40))
        alpha = None if nodata is not None else src._vrt.count
        former = _former_warped_mask(src._vrt, 1, rasterio.windows.Window(0, 0, 40, 30), alpha)
    finally:
        src.close()
    np.testing.assert_array_equal(valid, former)
    assert 0 < valid.sum() < valid.size and not valid[7:9, 17].any()  # NaN


@pytest.mark.parametrize("nodata", [None, 0])
def test_warped_truth_reads_its_band_and_nothing_outside_the_source(nodata, tmp_path) -> None:
    """A 2-band raster without nodata: GDAL does not take the warped VRT's alpha band (its 3rd) as the mask,
    so pixels outside the source read as valid zeros unless the alpha is read; band 2 must be band 2."""
    from rasterlearn.grid import Grid
    from rasterlearn.io.writer import write_array
    from rasterlearn.label_grid import RasterOnGrid

    t = np.stack([np.ones((15, 15), "uint8"), np.full((15, 15), 2, "uint8")])
    coarse = Grid(15, 15, rasterio.Affine(20.0, 0.0, 500_100.0, 0.0, -20.0, 4_000_000.0), "EPSG:32633")
    path = write_array(tmp_path / "two_bands.tif", t, coarse, nodata=nodata)
    grid = Grid(30, 40, rasterio.Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")
    src = RasterOnGrid(path, grid, band=2)
    try:
        assert src.relation.resampled
        data, valid = src.read(Window(0, 0, 30, 40))
    finally:
        src.close()
    assert not valid[:, :10].any() and valid[:, 10:].all()  # the source covers the map's columns 10..39
    assert set(np.unique(data[valid])) == {2}
