"""The synthetic demo scene: a deterministic, procedurally generated multispectral scene with labels.

``rasterlearn demo`` needs data that exists on every machine without a download and without committed data
files. :func:`make_synthetic_scene` writes one: a multi-band reflectance image in a real projected CRS with
water (a meandering river and a lake), forest (textured crowns, deciduous/conifer mixture), agricultural
fields (rectangular parcels with per-field crop spectra and tramline texture), a road network (curved main
roads and straight farm roads along parcel edges) and buildings (rotated rectangles beside the roads,
clustered in a village), with a nodata corner like the rotated edge of a satellite scene.

Everything derives from ``seed``: the same seed gives byte-identical arrays, the geometry does not depend on
the band count or the data type, and no pixel loop runs in Python (numpy/scipy only; about a second for the
default 768 x 768 scene). Each component draws from its own random stream, so e.g. switching the nodata
corner off leaves the rest of the scene unchanged.

Outputs are named *synthetic* everywhere (file names, layer names, raster tags) so that nobody mistakes them
for real imagery. The label polygons are polygonized from the object raster, so rasterizing them back onto
the grid (pixel centres) reproduces the label raster exactly.

The pure kernel is :func:`make_synthetic_array` (arrays + grid, no I/O); :func:`synthetic_polygons` and
:func:`synthetic_reference_points` turn its result into vector layers; :func:`make_synthetic_scene` writes
the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage

from rasterlearn._util import atomic_write_json, atomic_write_text
from rasterlearn.class_maps import class_map_style
from rasterlearn.errors import CRSError, InputError, OutputError
from rasterlearn.grid import Grid
from rasterlearn.labels import ClassInfo, ClassSchema

if TYPE_CHECKING:  # geopandas is imported lazily: the kernel needs only numpy/scipy
    import geopandas as gpd

__all__ = [
    "BAND_ORDER",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_VERSION",
    "WAVELENGTHS_NM",
    "SyntheticArrays",
    "SyntheticScene",
    "make_synthetic_array",
    "make_synthetic_scene",
    "synthetic_band_names",
    "synthetic_polygons",
    "synthetic_reference_points",
    "synthetic_schema",
]

log = logging.getLogger(__name__)

#: Bumped whenever the generator changes what a given seed produces.
SYNTHETIC_VERSION = 1

SyntheticDtype = Literal["uint16", "uint8", "float32"]

#: The 13 Sentinel-2-like bands the generator knows, with their centre wavelengths (nm).
# fmt: off
WAVELENGTHS_NM: dict[str, int] = {
    "coastal": 443, "blue": 490, "green": 560, "red": 665, "rededge1": 705, "rededge2": 740,
    "rededge3": 783, "nir": 842, "nir08": 865, "watervapour": 945, "cirrus": 1375, "swir16": 1610,
    "swir22": 2190,
}
# fmt: on
_SPECTRAL = list(WAVELENGTHS_NM)  # wavelength order, the column order of the material table

#: Band order of the synthetic image: ``bands=n`` takes the first ``n``. The first four are always
#: blue, green, red, nir (3 bands: true colour), so band *i* means the same thing at every band count.
BAND_ORDER: tuple[str, ...] = (
    "blue",
    "green",
    "red",
    "nir",
    "swir16",
    "swir22",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir08",
    "coastal",
    "watervapour",
    "cirrus",
)

#: (code, name, colour) of the synthetic classes; every valid pixel belongs to exactly one of them.
SYNTHETIC_CLASSES: tuple[tuple[int, str, str], ...] = (
    (1, "water", "#1f78b4"),
    (2, "forest", "#1b7837"),
    (3, "field", "#e3c867"),
    (4, "road", "#6e6e6e"),
    (5, "building", "#e31a1c"),
)
WATER, FOREST, FIELD, ROAD, BUILDING = 1, 2, 3, 4, 5
IGNORE = 255

# Surface reflectance (0..1) of the materials at the 13 wavelengths (coastal .. swir22), shaped after
# typical library spectra: water dark and darkest in the NIR/SWIR, vegetation with a red edge and a high NIR
# plateau, soil and ripe crops rising towards the SWIR, man-made surfaces flat and bright in the visible.
# fmt: off
_MATERIALS: dict[str, tuple[float, ...]] = {
    #                 coast  blue  green  red   re1   re2   re3   nir  nir08   wv  cirrus swir16 swir22
    "water_clear":   (.070, .060, .050, .030, .025, .020, .017, .015, .014, .008, .002, .006, .004),
    "water_turbid":  (.085, .080, .095, .075, .062, .045, .034, .028, .026, .013, .002, .010, .006),
    "forest_decid":  (.030, .034, .066, .036, .096, .250, .320, .350, .358, .120, .004, .170, .080),
    "forest_conif":  (.025, .027, .048, .027, .068, .178, .228, .250, .254, .090, .003, .118, .054),
    "crop_green":    (.034, .040, .088, .042, .125, .320, .420, .455, .462, .160, .004, .220, .110),
    "crop_ripe":     (.068, .078, .118, .158, .198, .248, .280, .300, .305, .110, .005, .350, .262),
    "rapeseed":      (.045, .050, .158, .122, .182, .350, .430, .460, .465, .160, .004, .250, .140),
    "bare_soil":     (.088, .100, .138, .180, .208, .238, .255, .270, .275, .100, .006, .352, .302),
    "grassland":     (.040, .046, .092, .062, .132, .280, .340, .360, .366, .130, .004, .252, .140),
    "road":          (.118, .128, .140, .150, .155, .160, .165, .170, .172, .075, .006, .205, .188),
    "roof_tile":     (.062, .070, .092, .222, .250, .268, .280, .290, .292, .120, .006, .330, .282),
    "roof_concrete": (.192, .202, .215, .228, .234, .240, .245, .250, .252, .110, .007, .282, .262),
    "roof_metal":    (.282, .300, .318, .328, .333, .335, .336, .340, .341, .150, .008, .300, .250),
}
# fmt: on
_CROPS = ("crop_green", "crop_ripe", "rapeseed", "bare_soil", "grassland")
_CROP_P = (0.34, 0.22, 0.10, 0.16, 0.18)
_ROOFS = ("roof_tile", "roof_concrete", "roof_metal")
_ROOF_P = (0.55, 0.30, 0.15)

# A rural spot in UTM zone 33N (Brandenburg / Lubusz border); used when it lies inside the CRS's area of use.
_ANCHOR_LONLAT = (14.62, 52.31)
_MIN_SIZE = 64

# Independent random streams, one per component (seed, stream) -> the scene does not shift when one
# component changes.
_STREAMS = {
    "fields": 1,
    "forest": 2,
    "water": 3,
    "roads": 4,
    "buildings": 5,
    "corner": 6,
    "spectra": 7,
    "texture": 8,
    "noise": 9,
    "points": 10,
    "objects": 11,
}


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAMS[stream], SYNTHETIC_VERSION])


# ---------------------------------------------------------------------------------------------------------
# value types
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class SyntheticArrays:
    """In-memory synthetic scene (the result of :func:`make_synthetic_array`).

    Attributes:
        image: ``(bands, rows, cols)`` image in ``dtype``; nodata pixels hold ``nodata``.
        labels: ``(rows, cols)`` uint8 class codes (see :data:`SYNTHETIC_CLASSES`); 255 where invalid.
        objects: ``(rows, cols)`` int32 object ids (each field parcel, forest patch, water body, road and
            building has its own id; 0 where invalid). ``object_codes[objects]`` equals ``labels`` on valid
            pixels.
        object_codes: ``(n_objects + 1,)`` uint8 class code of every object id (index 0: 255).
        valid: ``(rows, cols)`` bool, False in the nodata corner.
        grid: georeference (shape, transform, CRS).
        band_names: name of every band (``blue``, ``green``, ...).
        wavelengths: centre wavelength (nm) of every band.
        nodata: the image's nodata value (0 for integer images, NaN for float32).
        scale: ``reflectance = value * scale`` (1e-4 for uint16, 1/510 for uint8, 1 for float32).
        schema: the class schema.
        reference_pixels: ``(n, 2)`` (row, col) of reference pixels well inside water.
        seed: the seed that made it.
    """

    image: np.ndarray
    labels: np.ndarray
    objects: np.ndarray
    object_codes: np.ndarray
    valid: np.ndarray
    grid: Grid
    band_names: tuple[str, ...]
    wavelengths: tuple[int, ...]
    nodata: float
    scale: float
    schema: ClassSchema
    reference_pixels: np.ndarray
    seed: int

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> CRS | None:
        return self.grid.crs

    def class_fractions(self) -> dict[str, float]:
        """Share of each class among the valid pixels."""
        n = max(int(self.valid.sum()), 1)
        counts = np.bincount(self.labels[self.valid], minlength=256)
        return {c.name: float(counts[c.code]) / n for c in self.schema.classes}


@dataclass(frozen=True, slots=True)
class SyntheticScene:
    """Paths (and the schema) of a synthetic scene written by :func:`make_synthetic_scene`.

    Attributes:
        image: multi-band GeoTIFF (COG), ``synthetic_scene.tif``.
        labels: label polygons, ``synthetic_labels.gpkg`` (layer ``synthetic_labels``; attributes ``class``
            (name), ``code`` (int) and ``object_id``).
        label_raster: class-code raster on the image grid, ``synthetic_labels.tif`` (255 = no label).
        schema_path: class schema YAML, ``synthetic_classes.yaml`` (:meth:`ClassSchema.load` reads it).
        reference_points: a few points well inside water, ``synthetic_reference_points.gpkg``.
        metadata: ``synthetic_scene.json``: the parameters, files and class fractions.
        schema: the class schema.
        grid: the image grid.
        band_names: the image's band names.
        nodata: the image's nodata value.
        attribute: the label attribute holding class names (``class``); ``code_attribute`` holds codes.
        layer: the label polygons' layer name.
    """

    image: Path
    labels: Path
    label_raster: Path
    schema_path: Path
    reference_points: Path
    metadata: Path
    schema: ClassSchema
    grid: Grid
    band_names: tuple[str, ...]
    nodata: float
    seed: int
    attribute: str = "class"
    code_attribute: str = "code"
    layer: str = "synthetic_labels"


def synthetic_schema() -> ClassSchema:
    """The class schema of the synthetic scene (codes 1..5, no background class, ignore 255)."""
    return ClassSchema(
        tuple(ClassInfo(code, name, color) for code, name, color in SYNTHETIC_CLASSES),
        ignore_index=IGNORE,
        background=None,
    )


def synthetic_band_names(bands: int) -> tuple[str, ...]:
    """Names of the first ``bands`` synthetic bands (see :data:`BAND_ORDER`)."""
    if not 3 <= int(bands) <= len(BAND_ORDER):
        raise InputError(
            f"bands must be between 3 and {len(BAND_ORDER)}, got {bands}; the synthetic bands are "
            f"{', '.join(BAND_ORDER)} (in that order)"
        )
    return BAND_ORDER[: int(bands)]


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise with features about ``scale_px`` pixels across (float32).

    White noise on a lattice ``scale_px`` apart, interpolated with separable Gaussian weights (two small
    matrix products: fast, and identical on every run).
    """
    h, w = shape
    step = min(max(float(scale_px), 1.0), float(max(h, w)))  # larger features are plain gradients
    ch, cw = math.ceil(h / step) + 4, math.ceil(w / step) + 4
    coarse = rng.standard_normal((ch, cw))
    if step <= 1.0:
        out = coarse[:h, :w].astype(np.float32)
    else:
        out = (_interp_weights(h, ch, step) @ coarse @ _interp_weights(w, cw, step).T).astype(np.float32)
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 0 else 1.0)


def _interp_weights(n_out: int, n_in: int, step: float) -> np.ndarray:
    pos = (np.arange(n_out) + 0.5) / step + 2.0  # lattice coordinates, two lattice cells of margin
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in)[None, :]) / 0.6) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def _rasterize_pixels(
    shapes: list[tuple[Any, int]], shape: tuple[int, int], *, all_touched: bool = False, dtype: str = "int32"
) -> np.ndarray:
    """Rasterize geometries given in pixel coordinates (x = col, y = row); later shapes win."""
    from rasterio.features import rasterize

    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return rasterize(
        shapes, out_shape=shape, transform=Affine.identity(), fill=0, all_touched=all_touched, dtype=dtype
    )


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
# scene components (pixel space: x = col, y = row, units = pixels)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Objects:
    """Per-object attributes indexed by object id (index 0 unused), grown component by component."""

    codes: list[int]
    materials: list[str]
    gain: list[float]  # per-object brightness factor
    row_amp: list[float]  # field tramline texture amplitude
    row_period: list[float]  # tramline period (px)
    row_phase: list[float]
    row_axis: list[int]  # 0: rows along v (stripes across u), 1: along u
    cx: list[float]  # building centre / roof ridge
    cy: list[float]
    nx: list[float]  # building ridge normal
    ny: list[float]
    gable: list[float]
    mix: list[float]  # forest: shift of the deciduous share

    @classmethod
    def empty(cls) -> _Objects:
        return cls(
            [IGNORE], ["road"], [1.0], [0.0], [1.0], [0.0], [0], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0]
        )

    def add(self, code: int, material: str, gain: float = 1.0, **extra: float) -> int:
        self.codes.append(code)
        self.materials.append(material)
        self.gain.append(gain)
        for name in ("row_amp", "row_phase", "cx", "cy", "nx", "ny", "gable", "mix"):
            getattr(self, name).append(float(extra.get(name, 0.0)))
        self.row_period.append(float(extra.get("row_period", 1.0)))
        self.row_axis.append(int(extra.get("row_axis", 0)))
        return len(self.codes) - 1

    def array(self, name: str, dtype: str = "float32") -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=dtype)


def _fields(
    seed: int, shape: tuple[int, int], ppm: float, objs: _Objects, rr: np.ndarray, cc: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, list[float]]:
    """Rectangular parcels in a rotated frame; returns (ids, angle, u, v, strip cuts usable as farm roads)."""
    rng = _rng(seed, "fields")
    h, w = shape
    theta = math.radians(rng.uniform(-25.0, 25.0))
    cos, sin = math.cos(theta), math.sin(theta)
    u = cc * cos + rr * sin
    v = -cc * sin + rr * cos
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=float)
    us = corners[:, 0] * cos + corners[:, 1] * sin
    vs = -corners[:, 0] * sin + corners[:, 1] * cos
    umin, umax, vmin, vmax = us.min() - 1, us.max() + 1, vs.min() - 1, vs.max() + 1

    def cuts(lo: float, hi: float, small: float, large: float) -> np.ndarray:
        n = int((hi - lo) / small) + 2
        steps = rng.uniform(small, large, size=n)
        pos = lo + np.cumsum(steps)
        return pos[pos < hi]

    ucuts = cuts(umin, umax, 70 * ppm, 190 * ppm)
    strip = np.searchsorted(ucuts, u)
    ids = np.zeros(shape, dtype=np.int32)
    for s in range(len(ucuts) + 1):
        vcuts = cuts(vmin, vmax, 90 * ppm, 320 * ppm)
        inside = strip == s
        if not inside.any():
            continue
        local = np.searchsorted(vcuts, v[inside])
        first = len(objs.codes)
        for _ in range(len(vcuts) + 1):
            crop = str(rng.choice(_CROPS, p=_CROP_P))
            amp = {"bare_soil": 0.10, "grassland": 0.03}.get(crop, 0.07) * rng.uniform(0.5, 1.5)
            objs.add(
                FIELD,
                crop,
                gain=rng.uniform(0.9, 1.1),
                row_amp=amp,
                row_period=rng.uniform(6.0, 14.0) * ppm,
                row_phase=rng.uniform(0, 2 * math.pi),
                row_axis=int(rng.integers(0, 2)),
            )
        ids[inside] = first + local
    interior = [float(c) for c in ucuts if umin + 40 * ppm < c < umax - 40 * ppm]
    return ids, theta, u, v, interior


def _forest(seed: int, shape: tuple[int, int], ppm: float, target: float) -> np.ndarray:
    """Forest mask: thresholded low-frequency noise with rough edges, small bits and holes removed."""
    rng = _rng(seed, "forest")
    field = _noise(rng, shape, 160 * ppm) + 0.25 * _noise(rng, shape, 14 * ppm)
    mask = field > np.quantile(field, 1.0 - target)
    mask = _morph(mask, ndimage.binary_opening, 2)
    mask = _morph(mask, ndimage.binary_closing, 2)
    mask = _drop_small(mask, min(int(400 * ppm**2) + 10, mask.size // 50))  # drop patches under ~400 m2
    holes = _drop_small(~mask, 60)
    return ~holes


def _morph(mask: np.ndarray, op: Any, iterations: int) -> np.ndarray:
    """A binary morphology ``op`` that treats the outside as a continuation of the edge (no border bands)."""
    padded = np.pad(mask, iterations + 1, mode="edge")
    k = iterations + 1
    return op(padded, iterations=iterations)[k:-k, k:-k]


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def _water(seed: int, shape: tuple[int, int], ppm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """River (meandering band across the scene) and a lake; returns (river, lake, distance to bank in px)."""
    from shapely import LineString

    rng = _rng(seed, "water")
    h, w = shape
    horizontal = bool(rng.integers(0, 2))
    length, across = (w, h) if horizontal else (h, w)
    t = np.linspace(-0.1 * length, 1.1 * length, 400)
    base = rng.uniform(0.3, 0.7) * across
    tilt = rng.uniform(-0.25, 0.25) * across
    wave = rng.uniform(0.05, 0.10) * across * np.sin(
        2 * np.pi * t / rng.uniform(0.6, 1.0) / length + rng.uniform(0, 2 * np.pi)
    ) + rng.uniform(0.01, 0.04) * across * np.sin(
        2 * np.pi * t / rng.uniform(0.15, 0.3) / length + rng.uniform(0, 2 * np.pi)
    )
    off = base + tilt * (t / length - 0.5) + wave
    xy = np.column_stack([t, off] if horizontal else [off, t])
    centre = _rasterize_pixels([(LineString(xy), 1)], shape, all_touched=True) > 0
    dist = ndimage.distance_transform_edt(~centre)
    half = rng.uniform(12.0, 20.0) * ppm * (1 + 0.25 * _noise(rng, shape, 60 * ppm))
    river = dist < half

    rr, cc = np.ogrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    a = min(rng.uniform(100, 170) * ppm, 0.22 * w)
    b = min(a * rng.uniform(0.5, 0.9), 0.22 * h)
    ang = rng.uniform(0, np.pi)
    dx, dy = cc - cx, rr - cy
    e = np.hypot(
        (dx * math.cos(ang) + dy * math.sin(ang)) / a, (-dx * math.sin(ang) + dy * math.cos(ang)) / b
    )
    lake = e < 1.0 + 0.22 * _noise(rng, shape, 25 * ppm)
    lake = _drop_small(lake, 40)
    lab, n = ndimage.label(lake)
    if n > 1:  # keep the main body
        lake = lab == (1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    lake &= ~river
    water = river | lake
    bank = ndimage.distance_transform_edt(water).astype(np.float32)
    return river, lake, bank


def _roads(
    seed: int, shape: tuple[int, int], ppm: float, theta: float, cuts: list[float], objs: _Objects
) -> tuple[np.ndarray, list[Any], tuple[float, float]]:
    """Two curved main roads crossing the scene and 1-3 farm roads along parcel edges.

    Returns (object ids, road centre lines with half widths, village centre).
    """
    from shapely import LineString, box

    rng = _rng(seed, "roads")
    h, w = shape
    lines: list[tuple[Any, float]] = []
    first_along_x = bool(rng.integers(0, 2))
    for k in range(2):  # two main roads, roughly perpendicular
        along_x = first_along_x if k == 0 else not first_along_x
        length, across = (w, h) if along_x else (h, w)
        t = np.linspace(-0.05 * length, 1.05 * length, 200)
        pos = (
            rng.uniform(0.2, 0.8) * across
            + rng.uniform(-0.2, 0.2) * across * (t / length - 0.5)
            + rng.uniform(0.02, 0.06)
            * across
            * np.sin(2 * np.pi * t / length * rng.uniform(0.4, 1.0) + rng.uniform(0, 2 * np.pi))
        )
        xy = np.column_stack([t, pos] if along_x else [pos, t])
        lines.append((LineString(xy), rng.uniform(3.5, 4.5) * ppm))
    frame = box(-5, -5, w + 5, h + 5)
    cos, sin = math.cos(theta), math.sin(theta)
    n_farm = int(rng.integers(1, 4))
    picks: list[int] = (
        rng.choice(len(cuts), size=min(n_farm, len(cuts)), replace=False).tolist() if cuts else []
    )
    big = 2.0 * (h + w)
    for i in sorted(int(p) for p in picks):
        c = cuts[i]
        vv = np.array([-big, big])
        seg = LineString(np.column_stack([c * cos - vv * sin, c * sin + vv * cos])).intersection(frame)
        if not seg.is_empty and seg.length > 20:
            lines.append((seg, rng.uniform(2.2, 3.0) * ppm))
    # the village: at the crossroads of the main roads when they cross inside the scene, with side streets
    main = lines[0][0]
    cross = main.intersection(lines[1][0])
    if cross.geom_type == "Point" and 0.15 * w < cross.x < 0.85 * w and 0.15 * h < cross.y < 0.85 * h:
        village = cross
    else:
        village = main.interpolate(rng.uniform(0.3, 0.7), normalized=True)
    along = main.interpolate(main.project(village) + 1.0)
    base = math.atan2(along.y - village.y, along.x - village.x)
    for k in range(int(rng.integers(2, 4))):
        start = main.interpolate(main.project(village) + rng.uniform(-120, 120) * ppm)
        ang = base + (math.pi / 2 if k % 2 == 0 else -math.pi / 2) + math.radians(rng.normal(0, 10))
        reach = rng.uniform(120, 260) * ppm
        street = LineString(
            [(start.x, start.y), (start.x + reach * math.cos(ang), start.y + reach * math.sin(ang))]
        ).intersection(frame)
        if not street.is_empty and street.geom_type == "LineString" and street.length > 10 * ppm:
            lines.append((street, rng.uniform(2.5, 3.2) * ppm))
    shapes = []
    for line, half in lines:
        oid = objs.add(ROAD, "road", gain=rng.uniform(0.85, 1.15))
        shapes.append((line.buffer(half, cap_style="flat"), oid))
    ids = _rasterize_pixels(shapes, shape)
    return ids, lines, (village.x, village.y)


def _buildings(
    seed: int,
    shape: tuple[int, int],
    ppm: float,
    lines: list[tuple[Any, float]],
    village: tuple[float, float],
    blocked: np.ndarray,
    objs: _Objects,
) -> np.ndarray:
    """Rotated rectangles beside the roads, dense in the village and sparse elsewhere."""
    import shapely

    rng = _rng(seed, "buildings")
    cands: list[np.ndarray] = []
    info: list[tuple[Any, ...]] = []
    for line, half in lines:
        spacing = 16.0 * ppm
        d = np.arange(rng.uniform(0, spacing), line.length, spacing)
        if d.size == 0:
            continue
        p = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
        q = shapely.get_coordinates(shapely.line_interpolate_point(line, np.minimum(d + 1.0, line.length)))
        r = shapely.get_coordinates(shapely.line_interpolate_point(line, np.maximum(d - 1.0, 0.0)))
        tan = q - r
        tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
        nrm = np.column_stack([-tan[:, 1], tan[:, 0]])
        dv = np.hypot(p[:, 0] - village[0], p[:, 1] - village[1]) / ppm  # metres
        prob = 0.08 + 0.9 * np.exp(-((dv / 300.0) ** 2))
        # a front row by the road, and in the village a second row behind it
        for side, row in ((-1.0, 0), (1.0, 0), (-1.0, 1), (1.0, 1)):
            wanted = rng.random(len(d)) < (prob if row == 0 else 0.8 * prob * (dv < 350))
            length = rng.uniform(10.0, 24.0, len(d)) * ppm
            depth = rng.uniform(8.0, 14.0, len(d)) * ppm
            setback = rng.uniform(4.0, 12.0, len(d)) * ppm + row * rng.uniform(24.0, 34.0, len(d)) * ppm
            jitter = np.radians(rng.normal(0.0, 4.0, len(d)))
            roof = rng.choice(len(_ROOFS), size=len(d), p=_ROOF_P)
            gable = rng.uniform(0.04, 0.12, len(d))
            gain = rng.uniform(0.85, 1.15, len(d))
            centre = p + side * nrm * (half + setback + depth / 2)[:, None]
            cj, sj = np.cos(jitter), np.sin(jitter)
            ax = np.column_stack([tan[:, 0] * cj - tan[:, 1] * sj, tan[:, 0] * sj + tan[:, 1] * cj])
            ay = np.column_stack([-ax[:, 1], ax[:, 0]])
            hl, hd = (length / 2)[:, None], (depth / 2)[:, None]
            corners = np.stack(
                [
                    centre + ax * hl + ay * hd,
                    centre - ax * hl + ay * hd,
                    centre - ax * hl - ay * hd,
                    centre + ax * hl - ay * hd,
                ],
                axis=1,
            )
            cands.append(corners)
            for j in range(len(d)):
                info.append(
                    (
                        centre[j, 0],
                        centre[j, 1],
                        ay[j, 0],
                        ay[j, 1],
                        gable[j],
                        _ROOFS[roof[j]],
                        gain[j],
                        bool(wanted[j]),
                    )
                )
    if not cands:
        return np.zeros(shape, dtype=np.int32)
    polys = shapely.polygons(np.concatenate(cands))
    wanted_idx = [i for i, rec in enumerate(info) if rec[-1]]
    kept = _place_buildings(polys, wanted_idx, shape, blocked, ppm)
    if not kept:  # a small scene without a surviving building: try every candidate position
        kept = _place_buildings(polys, list(range(len(polys))), shape, blocked, ppm)
    shapes = []
    for i in kept:
        cx, cy, nx, ny, gbl, roof_name, gn, _ = info[i]
        oid = objs.add(BUILDING, roof_name, gain=gn, cx=cx, cy=cy, nx=nx, ny=ny, gable=gbl)
        shapes.append((polys[i], oid))
    return _rasterize_pixels(shapes, shape)


def _place_buildings(
    polys: np.ndarray, order: list[int], shape: tuple[int, int], blocked: np.ndarray, ppm: float
) -> list[int]:
    """Candidates (in ``order``) that keep a gap to the earlier ones and touch neither roads nor water."""
    import shapely

    gap = 2.5 * ppm
    kept: list[int] = []
    for i in order:  # greedy: a candidate survives when it keeps a gap to the earlier ones
        if kept and shapely.intersects(polys[kept], polys[i].buffer(gap)).any():
            continue
        kept.append(i)
    if not kept:
        return kept
    ids = _rasterize_pixels([(polys[i], k + 1) for k, i in enumerate(kept)], shape)
    n = len(kept) + 1
    clash = np.bincount(ids[blocked], minlength=n) > 0
    size = np.bincount(ids.ravel(), minlength=n)
    bad = clash | (size < max(4, int(40 * ppm**2)))  # touching a road or water, or under ~40 m2 (off-scene)
    return [i for k, i in enumerate(kept) if not bad[k + 1]]


def _corner(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Valid mask with a triangular nodata corner (the rotated edge of a satellite scene)."""
    rng = _rng(seed, "corner")
    h, w = shape
    which = int(rng.integers(0, 4))
    a, b = rng.uniform(0.2, 0.35) * h, rng.uniform(0.2, 0.35) * w
    rr, cc = np.ogrid[0:h, 0:w]
    r = (rr + 0.5) if which in (0, 1) else (h - rr - 0.5)
    c = (cc + 0.5) if which in (0, 2) else (w - cc - 0.5)
    return (r / a + c / b) >= 1.0


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


# ---------------------------------------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------------------------------------
def synthetic_polygons(arrays: SyntheticArrays) -> gpd.GeoDataFrame:
    """Label polygons of the scene: one feature per connected piece of every object.

    Polygons follow pixel edges (polygonized from the object raster), so rasterizing them back onto the grid
    reproduces ``arrays.labels`` exactly on valid pixels. Columns: ``class`` (name), ``code``, ``object_id``.
    """
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape as to_shape

    geoms, ids = [], []
    for geom, value in shapes(arrays.objects, mask=arrays.valid, connectivity=4, transform=arrays.transform):
        geoms.append(to_shape(geom))
        ids.append(int(value))
    id_arr = np.asarray(ids, dtype=np.int64)
    codes = arrays.object_codes[id_arr].astype(np.int32)
    names = dict(arrays.schema.category_names())
    gdf = gpd.GeoDataFrame(
        {"class": [names[int(c)] for c in codes], "code": codes, "object_id": id_arr},
        geometry=geoms,
        crs=arrays.crs,
    )
    return gdf.sort_values(["code", "object_id"], kind="stable").reset_index(drop=True)


def synthetic_reference_points(arrays: SyntheticArrays) -> gpd.GeoDataFrame:
    """Reference points at the centres of ``arrays.reference_pixels`` (on water), for similarity search."""
    import geopandas as gpd
    from shapely import points

    rows, cols = arrays.reference_pixels[:, 0], arrays.reference_pixels[:, 1]
    t = arrays.transform
    xs = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
    ys = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
    n = len(rows)
    return gpd.GeoDataFrame(
        {
            "name": [f"water_{i + 1}" for i in range(n)],
            "class": ["water"] * n,
            "code": np.full(n, WATER, dtype=np.int32),
        },
        geometry=points(np.column_stack([xs, ys])) if n else [],
        crs=arrays.crs,
    )


# ---------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------
_FILES = {
    "image": "synthetic_scene.tif",
    "labels": "synthetic_labels.gpkg",
    "label_raster": "synthetic_labels.tif",
    "schema_path": "synthetic_classes.yaml",
    "reference_points": "synthetic_reference_points.gpkg",
    "metadata": "synthetic_scene.json",
}


def make_synthetic_scene(
    out_dir: str | os.PathLike[str],
    *,
    size: tuple[int, int] | int = (768, 768),
    bands: int = 4,
    dtype: SyntheticDtype = "uint16",
    seed: int = 0,
    crs: str | int | CRS = "EPSG:32633",
    resolution: float = 2.0,
    nodata_corner: bool = True,
    reuse: bool = True,
) -> SyntheticScene:
    """Write the synthetic demo scene (image, labels, label raster, class schema, reference points).

    Files in ``out_dir`` (created if missing): ``synthetic_scene.tif`` (tiled COG, band descriptions, nodata,
    tags ``SYNTHETIC=yes``), ``synthetic_labels.gpkg`` (layer ``synthetic_labels``), ``synthetic_labels.tif``
    (class codes, 255 = no label, colour table), ``synthetic_classes.yaml``, ``synthetic_reference_points.gpkg``
    and ``synthetic_scene.json`` (parameters, written last). Every file is written under a temporary name and
    renamed, so an interrupted call never leaves a half-written file under a final name.

    Args:
        out_dir: output folder.
        size, bands, dtype, seed, crs, resolution, nodata_corner: see :func:`make_synthetic_array`.
        reuse: when ``out_dir`` already holds a complete scene made with the same parameters (same
            ``synthetic_scene.json``), return it without rewriting (keeps file times, so later stages cached
            on their inputs stay valid). ``False`` always rewrites.

    Returns:
        The paths, schema and grid of the scene.
    """
    out = Path(out_dir)
    params: dict[str, Any] = {
        "size": list(_size(size)),
        "bands": int(bands),
        "dtype": dtype,
        "seed": int(seed),
        "crs": _check_crs(crs).to_string(),
        "resolution": float(resolution),
        "nodata_corner": bool(nodata_corner),
        "version": SYNTHETIC_VERSION,
    }
    paths = {k: out / v for k, v in _FILES.items()}
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"{out} exists and is not a folder; choose another output folder for the synthetic scene"
        )
    out.mkdir(parents=True, exist_ok=True)
    if reuse:
        found = _reuse(paths, params)
        if found is not None:
            return found

    arrays = make_synthetic_array(
        size=(params["size"][0], params["size"][1]),
        bands=bands,
        dtype=dtype,
        seed=seed,
        crs=crs,
        resolution=resolution,
        nodata_corner=nodata_corner,
    )
    _write(arrays, paths, params)
    log.info(
        "Wrote the synthetic scene (seed %d, %dx%d px, %d bands) to %s",
        seed,
        arrays.grid.height,
        arrays.grid.width,
        len(arrays.band_names),
        out,
    )
    return _scene(paths, arrays.schema, arrays.grid, arrays.band_names, arrays.nodata, int(seed))


def _scene(
    paths: dict[str, Path],
    schema: ClassSchema,
    grid: Grid,
    band_names: tuple[str, ...],
    nodata: float,
    seed: int,
) -> SyntheticScene:
    return SyntheticScene(
        image=paths["image"],
        labels=paths["labels"],
        label_raster=paths["label_raster"],
        schema_path=paths["schema_path"],
        reference_points=paths["reference_points"],
        metadata=paths["metadata"],
        schema=schema,
        grid=grid,
        band_names=band_names,
        nodata=nodata,
        seed=seed,
    )


def _reuse(paths: dict[str, Path], params: dict[str, Any]) -> SyntheticScene | None:
    try:
        record = json.loads(paths["metadata"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("parameters") != params or not all(p.exists() for p in paths.values()):
        return None
    try:
        grid = Grid.from_dict(record["grid"])
        schema = ClassSchema.from_dict(record["schema"])
        nodata = float(record["nodata"])
        names = tuple(record["band_names"])
    except Exception:  # an older or damaged record: regenerate
        return None
    log.info("Reusing the synthetic scene in %s (same parameters)", paths["image"].parent)
    return _scene(paths, schema, grid, names, nodata, params["seed"])


def _write(arrays: SyntheticArrays, paths: dict[str, Path], params: dict[str, Any]) -> None:
    from rasterlearn.io.vector import write_vector
    from rasterlearn.io.writer import write_array

    with contextlib.suppress(FileNotFoundError):
        paths["metadata"].unlink()  # the record is the completion marker: remove it first, write it last
    schema = arrays.schema
    fractions = arrays.class_fractions()
    description = (
        "SYNTHETIC scene generated by rasterlearn.synthetic (procedural, not real imagery): "
        "water, forest, fields, roads and buildings"
    )
    scale_note = {
        "uint16": "reflectance = value / 10000",
        "uint8": "reflectance = value / 510",
        "float32": "reflectance",
    }[str(arrays.image.dtype)]
    tags = {
        "SYNTHETIC": "yes",
        "DESCRIPTION": description,
        "SYNTHETIC_GENERATOR": "rasterlearn.synthetic",
        "SYNTHETIC_VERSION": SYNTHETIC_VERSION,
        "SYNTHETIC_SEED": arrays.seed,
        "SYNTHETIC_PARAMETERS": params,
        "VALUES": scale_note,
        "REFLECTANCE_SCALE": arrays.scale,
    }
    band_tags = [
        {"NAME": n, "CENTRAL_WAVELENGTH_NM": wl, "SYNTHETIC": "yes"}
        for n, wl in zip(arrays.band_names, arrays.wavelengths, strict=True)
    ]
    write_array(
        paths["image"],
        arrays.image,
        arrays.grid,
        nodata=arrays.nodata,
        band_descriptions=list(arrays.band_names),
        tags=tags,
        band_tags=band_tags,
    )
    write_array(
        paths["label_raster"],
        arrays.labels,
        arrays.grid,
        nodata=IGNORE,
        band_descriptions=["synthetic_class"],
        **class_map_style(schema, nodata=IGNORE, nodata_name="no label", nodata_color=None),
        tags={
            "SYNTHETIC": "yes",
            "DESCRIPTION": "SYNTHETIC class codes of the rasterlearn synthetic scene",
            "SYNTHETIC_SEED": arrays.seed,
            "CLASSES": schema.describe(),
            "IGNORE_VALUE": IGNORE,
        },
    )
    write_vector(synthetic_polygons(arrays), paths["labels"], layer="synthetic_labels")
    write_vector(
        synthetic_reference_points(arrays), paths["reference_points"], layer="synthetic_reference_points"
    )
    atomic_write_text(
        paths["schema_path"],
        "# Classes of the rasterlearn SYNTHETIC demo scene (procedurally generated, not real data)\n"
        + yaml.safe_dump(schema.to_dict(), sort_keys=False),
    )
    record = {
        "synthetic": True,
        "generator": "rasterlearn.synthetic",
        "parameters": params,
        "grid": arrays.grid.to_dict(),
        "band_names": list(arrays.band_names),
        "wavelengths_nm": list(arrays.wavelengths),
        "nodata": _json_float(arrays.nodata),
        "reflectance_scale": arrays.scale,
        "schema": schema.to_dict(),
        "attribute": "class",
        "code_attribute": "code",
        "class_fractions": fractions,
        "files": {k: p.name for k, p in paths.items()},
    }
    atomic_write_json(paths["metadata"], record)


def _json_float(value: float) -> float | str:
    return "nan" if math.isnan(value) else value
