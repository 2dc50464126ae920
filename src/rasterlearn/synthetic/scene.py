"""The kernel: :func:`make_synthetic_array` lays out the components on a grid and renders the image
(no I/O)."""

from __future__ import annotations

import logging
import math

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage

from rasterlearn.errors import CRSError, InputError
from rasterlearn.grid import Grid
from rasterlearn.synthetic.components import (
    _buildings,
    _corner,
    _fields,
    _forest,
    _noise,
    _Objects,
    _roads,
    _water,
)
from rasterlearn.synthetic.spec import (
    _ANCHOR_LONLAT,
    _MATERIALS,
    _MIN_SIZE,
    _SPECTRAL,
    FIELD,
    FOREST,
    IGNORE,
    ROAD,
    WATER,
    WAVELENGTHS_NM,
    SyntheticArrays,
    SyntheticDtype,
    _rng,
    synthetic_band_names,
    synthetic_schema,
)

# one logger for the whole module, as before the split
log = logging.getLogger("rasterlearn.synthetic")


def _grid_origin(crs: CRS, size: tuple[int, int], resolution: float) -> tuple[float, float]:
    """Upper-left corner in ``crs``: around a rural anchor point when the CRS covers it, else the CRS's
    area-of-use centre; snapped to whole multiples of the resolution."""
    lon, lat = _ANCHOR_LONLAT
    aou = crs.area_of_use
    if aou is not None and not (aou.west <= lon <= aou.east and aou.south <= lat <= aou.north):
        lon, lat = (aou.west + aou.east) / 2, (aou.south + aou.north) / 2
    try:
        x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    except Exception:  # pragma: no cover - exotic CRS without a transformation from WGS84
        x, y = 0.0, 0.0
    if not (math.isfinite(x) and math.isfinite(y)):
        x, y = 0.0, 0.0
    rows, cols = size
    snap = resolution * 64
    x0 = math.floor((x - cols * resolution / 2) / snap) * snap
    y0 = math.ceil((y + rows * resolution / 2) / snap) * snap
    return x0, y0


def _size(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    try:
        rows, cols = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"size must be (rows, cols) or one integer, got {size!r}") from exc
    return rows, cols


def _check_crs(crs: str | int | CRS) -> CRS:
    try:
        out = CRS.from_user_input(crs)
    except Exception as exc:
        raise CRSError(
            f"Unknown CRS {crs!r} for the synthetic scene: give a projected CRS in metres, e.g. 'EPSG:32633'"
        ) from exc
    if not out.is_projected:
        raise CRSError(
            f"The synthetic scene needs a projected CRS in metres; {out.name} ({crs!r}) is "
            f"{'geographic' if out.is_geographic else 'not projected'}. Use e.g. 'EPSG:32633' (UTM 33N)."
        )
    units = {(a.unit_name or "").lower() for a in out.axis_info[:2]}
    if not units <= {"metre", "meter", "m"}:
        raise CRSError(
            f"The synthetic scene needs a CRS in metres; {out.name} ({crs!r}) uses {sorted(units)}. "
            f"Use e.g. 'EPSG:32633' (UTM 33N)."
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# kernel
# ---------------------------------------------------------------------------------------------------------
def make_synthetic_array(
    *,
    size: tuple[int, int] | int = (768, 768),
    bands: int = 4,
    dtype: SyntheticDtype = "uint16",
    seed: int = 0,
    crs: str | int | CRS = "EPSG:32633",
    resolution: float = 2.0,
    nodata_corner: bool = True,
    origin: tuple[float, float] | None = None,
) -> SyntheticArrays:
    """Generate the synthetic scene in memory (no I/O).

    Args:
        size: ``(rows, cols)``, at least 64 each.
        bands: number of bands, 3..13, taken from :data:`BAND_ORDER` (blue, green, red, nir, swir16, ...).
        dtype: ``uint16`` (reflectance x 10000, nodata 0), ``uint8`` (reflectance x 510, nodata 0) or
            ``float32`` (reflectance, nodata NaN).
        seed: random seed; the same seed gives byte-identical arrays.
        crs: a projected CRS in metres.
        resolution: pixel size in metres. Object sizes are in metres (parcels 70-190 m wide, buildings
            10-24 m long, roads 4-9 m wide), so a coarser resolution shows the same landscape with fewer pixels.
        nodata_corner: set a triangular corner to nodata (label 255).
        origin: upper-left ``(x, y)`` in ``crs``; default: a rural spot in the CRS's area of use.

    Returns:
        The image, label and object rasters, the validity mask and the georeference.

    Raises:
        InputError: on a bad size, band count, dtype or resolution.
        CRSError: when ``crs`` is unknown, geographic or not in metres.
    """
    rows, cols = _size(size)
    if rows < _MIN_SIZE or cols < _MIN_SIZE:
        raise InputError(
            f"The synthetic scene needs at least {_MIN_SIZE} x {_MIN_SIZE} pixels, got size={(rows, cols)}"
        )
    names = synthetic_band_names(bands)
    if dtype not in ("uint16", "uint8", "float32"):
        raise InputError(f"dtype must be one of uint16, uint8, float32; got {dtype!r}")
    if not (isinstance(resolution, int | float) and math.isfinite(resolution) and 0.1 <= resolution <= 100):
        raise InputError(f"resolution must be between 0.1 and 100 m, got {resolution!r}")
    out_crs = _check_crs(crs)
    ppm = 1.0 / float(resolution)  # pixels per metre
    shape = (rows, cols)
    x0, y0 = origin if origin is not None else _grid_origin(out_crs, shape, float(resolution))
    grid = Grid(
        rows, cols, Affine(float(resolution), 0.0, float(x0), 0.0, -float(resolution), float(y0)), out_crs
    )

    objs, objects, u, v, rr, cc, bank, forest = _layout(seed, shape, ppm)

    valid = _corner(seed, shape) if nodata_corner else np.ones(shape, dtype=bool)
    codes = np.asarray(objs.codes, dtype=np.uint8)
    labels = np.where(valid, codes[objects], np.uint8(IGNORE)).astype(np.uint8)
    objects = np.where(valid, objects, 0).astype(np.int32)

    image, scale, nodata = _render(
        seed, objs, objects, labels, valid, names, ppm, u, v, rr, cc, bank, forest, dtype
    )
    refs = _reference_pixels(seed, labels, bank, ppm)
    schema = synthetic_schema()
    arrays = SyntheticArrays(
        image,
        labels,
        objects,
        codes,
        valid,
        grid,
        names,
        tuple(WAVELENGTHS_NM[n] for n in names),
        nodata,
        scale,
        schema,
        refs,
        int(seed),
    )
    log.debug(
        "Synthetic scene seed=%d %dx%d: %s",
        seed,
        rows,
        cols,
        ", ".join(f"{k} {v:.1%}" for k, v in arrays.class_fractions().items()),
    )
    return arrays


def _layout(
    seed: int, shape: tuple[int, int], ppm: float
) -> tuple[_Objects, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lay out the components on the pixel grid: (objects' attributes, object ids, field frame u and v, pixel
    centre rows and cols, distance to the water's bank, forest mask)."""
    rows, cols = shape
    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float32)
    rr += 0.5
    cc += 0.5
    objs = _Objects.empty()
    # 1. fields cover everything, 2. forest, 3. water, 4. roads (bridges cross rivers), 5. buildings
    objects, theta, u, v, cuts = _fields(seed, shape, ppm, objs, rr, cc)
    forest = _forest(seed, shape, ppm, target=0.24)
    river, lake, bank = _water(seed, shape, ppm)
    water = river | lake
    forest &= ~water
    rng_f = _rng(seed, "objects")
    lab, n_forest = ndimage.label(forest)
    first = len(objs.codes)
    for _ in range(n_forest):
        objs.add(FOREST, "forest_decid", gain=rng_f.uniform(0.9, 1.1), mix=rng_f.uniform(-0.4, 0.4))
    objects[forest] = first - 1 + lab[forest]
    first = len(objs.codes)
    objs.add(WATER, "water_clear", gain=rng_f.uniform(0.9, 1.1))
    objs.add(WATER, "water_clear", gain=rng_f.uniform(0.9, 1.1))
    objects[river] = first
    objects[lake] = first + 1
    road_ids, lines, village = _roads(seed, shape, ppm, theta, cuts, objs)
    road = road_ids > 0
    objects[road] = road_ids[road]
    bld_ids = _buildings(seed, shape, ppm, lines, village, road | water, objs)
    bld = bld_ids > 0
    objects[bld] = bld_ids[bld]
    return objs, objects, u, v, rr, cc, bank, forest


def _render(
    seed: int,
    objs: _Objects,
    objects: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    names: tuple[str, ...],
    ppm: float,
    u: np.ndarray,
    v: np.ndarray,
    rr: np.ndarray,
    cc: np.ndarray,
    bank: np.ndarray,
    forest: np.ndarray,
    dtype: str,
) -> tuple[np.ndarray, float, float]:
    """Reflectance from per-object spectra x textures, blurred by a PSF, plus sensor noise; then quantized."""
    shape = objects.shape
    band_idx = [_SPECTRAL.index(n) for n in names]
    table = np.array([_MATERIALS[m] for m in objs.materials], dtype=np.float32)[:, band_idx]
    rng_s = _rng(seed, "spectra")
    # per-object spectral variability: a brightness gain and a small, smooth per-band jitter
    jitter = 1.0 + 0.03 * rng_s.standard_normal((len(objs.codes), len(band_idx))).astype(np.float32)
    table *= jitter * objs.array("gain")[:, None]
    refl = np.take(table.T, objects, axis=1)  # (bands, rows, cols)

    rng_t = _rng(seed, "texture")
    tex = np.ones(shape, dtype=np.float32)
    # fields: tramlines / furrows along one parcel axis, plus smooth within-field variation
    amp, period = objs.array("row_amp")[objects], objs.array("row_period")[objects]
    phase, axis = objs.array("row_phase")[objects], objs.array("row_axis", "int8")[objects]
    coord = np.where(axis == 1, u, v)
    tex += amp * np.cos(2 * np.pi * coord / period + phase)
    tex *= 1.0 + 0.05 * _noise(rng_t, shape, 25 * ppm) * (labels == FIELD)
    # forest: crowns of a few metres, gaps in shadow; deciduous/conifer mixture varies smoothly
    is_forest = labels == FOREST
    crowns = _noise(rng_t, shape, 4.0 * ppm)
    tex *= np.where(
        is_forest, np.clip(1.0 + 0.22 * crowns, 0.45, 1.5) * np.where(crowns < -1.2, 0.6, 1.0), 1.0
    )
    mix = np.clip(0.5 + 0.45 * _noise(rng_t, shape, 90 * ppm) + objs.array("mix")[objects], 0.0, 1.0)
    conif = np.asarray(_MATERIALS["forest_conif"], dtype=np.float32)[band_idx]
    decid = np.asarray(_MATERIALS["forest_decid"], dtype=np.float32)[band_idx]
    f_rows, f_cols = np.nonzero(is_forest)
    w = mix[f_rows, f_cols]
    gain = objs.array("gain")[objects[f_rows, f_cols]]
    refl[:, f_rows, f_cols] = (decid[:, None] * w + conif[:, None] * (1 - w)) * gain
    # water: turbid and brighter near the banks, clearer in the middle, faint ripples
    is_water = labels == WATER
    clear = np.asarray(_MATERIALS["water_clear"], dtype=np.float32)[band_idx]
    turbid = np.asarray(_MATERIALS["water_turbid"], dtype=np.float32)[band_idx]
    w_rows, w_cols = np.nonzero(is_water)
    t = 0.15 + 0.85 * np.exp(-bank[w_rows, w_cols] / (6.0 * ppm))
    refl[:, w_rows, w_cols] = turbid[:, None] * t + clear[:, None] * (1 - t)
    tex *= np.where(is_water, 1.0 + 0.04 * _noise(rng_t, shape, 3.0 * ppm), 1.0)
    # roads: worn surface; buildings: two roof planes lit differently (gable), per-building brightness
    tex *= np.where(labels == ROAD, 1.0 + 0.04 * _noise(rng_t, shape, 2.0 * ppm), 1.0)
    side = np.sign(
        (cc - objs.array("cx")[objects]) * objs.array("nx")[objects]
        + (rr - objs.array("cy")[objects]) * objs.array("ny")[objects]
    )
    tex *= 1.0 + objs.array("gable")[objects] * side
    refl *= tex[None]
    # whole scene: gentle illumination gradient and a haze that lifts the short wavelengths
    illum = 1.0 + 0.03 * _noise(rng_t, shape, 300 * ppm)
    haze = 0.006 * (1.0 + 0.5 * _noise(rng_t, shape, 200 * ppm))
    lam = np.asarray([WAVELENGTHS_NM[n] for n in names], dtype=np.float32)
    refl = (refl * illum[None] + haze[None] * ((490.0 / lam) ** 2)[:, None, None]).astype(
        np.float32, copy=False
    )
    # optics: a point spread function mixes neighbouring pixels (soft, realistic edges)
    refl = ndimage.gaussian_filter(refl, sigma=(0, 0.55, 0.55), mode="nearest")
    # sensor: signal-dependent gaussian noise
    rng_n = _rng(seed, "noise")
    refl += (0.002 + 0.01 * refl) * rng_n.standard_normal(refl.shape, dtype=np.float32)
    np.clip(refl, 0.0, 1.0, out=refl)

    if dtype == "float32":
        scale, nodata = 1.0, float("nan")
        out = np.maximum(refl, 1e-4).astype(np.float32)
        out[:, ~valid] = np.nan
    else:
        scale = 1e-4 if dtype == "uint16" else 1.0 / 510.0
        top = 65535 if dtype == "uint16" else 255
        out = np.clip(np.rint(refl / scale), 1, top).astype(dtype)
        nodata = 0.0
        out[:, ~valid] = 0
    return out, scale, nodata


def _reference_pixels(seed: int, labels: np.ndarray, bank: np.ndarray, ppm: float, n: int = 5) -> np.ndarray:
    """Up to ``n`` (row, col) pixels well inside water, spread over the water bodies."""
    rng = _rng(seed, "points")
    inner = (labels == WATER) & (bank >= max(2.0, 4.0 * ppm))
    if not inner.any():
        inner = labels == WATER
    cand = np.argwhere(inner)
    if len(cand) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    picks = [int(rng.integers(len(cand)))]
    dmin = np.hypot(*(cand - cand[picks[0]]).T)
    while len(picks) < min(n, len(cand)):  # farthest-point sampling: spread along the river and the lake
        nxt = int(np.argmax(dmin))
        if dmin[nxt] <= 0:
            break
        picks.append(nxt)
        dmin = np.minimum(dmin, np.hypot(*(cand - cand[nxt]).T))
    return cand[picks]
