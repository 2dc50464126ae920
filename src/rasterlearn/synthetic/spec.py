"""What the synthetic scene is made of: bands, classes, material spectra, random streams, and its
value types (:class:`SyntheticArrays`, :class:`SyntheticScene`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from pyproj import CRS

from rasterlearn.errors import InputError
from rasterlearn.grid import Grid
from rasterlearn.labels import ClassInfo, ClassSchema

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
