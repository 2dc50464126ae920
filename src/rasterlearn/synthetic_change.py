"""A synthetic two-date scene with planted changes, for change detection tests and demos.

Built from the synthetic generator (:mod:`rasterlearn.synthetic`): the same landscape (fields, forest,
water, roads, buildings) is rendered twice. Between date A and date B

* **buildings appear**: a share of the buildings exists only in date B (date A shows the field or forest
  under them);
* **forest is cleared**: a disc of the largest forest patch becomes bare soil;
* **fields change crop**: a share of the parcels gets another crop (another spectrum and texture).

Date B is a different acquisition and season, so unchanged pixels differ too (as with real imagery):
a per-band gain (atmosphere), a smooth illumination gradient, leaf-off deciduous forest (lower NIR, higher
visible), more turbid water and its own sensor noise. ``nuisance`` scales these (0: only a 4 % gain and
noise); they are *not* labelled as change, so a method has to tell them from the planted changes. The change label is 1
where the land cover or the crop differs, 0 elsewhere, 255 in the nodata corner; the kind raster tells which
change it is (1 new building, 2 cleared forest, 3 crop change). Everything derives from ``seed``.

Outputs are named *synthetic* everywhere so that nobody mistakes them for real imagery.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from pyproj import CRS
from scipy import ndimage

from rasterlearn import synthetic as syn
from rasterlearn._util import atomic_write_json
from rasterlearn.class_maps import class_map_style
from rasterlearn.errors import InputError, OutputError
from rasterlearn.grid import Grid
from rasterlearn.labels import ClassInfo, ClassSchema

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "CHANGE_KINDS",
    "ChangeArrays",
    "ChangeScene",
    "change_polygons",
    "change_schema",
    "make_change_arrays",
    "make_change_scene",
]

log = logging.getLogger(__name__)

CHANGE_VERSION = 1
#: Kinds of planted change (code -> name) in the kind raster and the polygons' ``kind`` attribute.
CHANGE_KINDS: dict[int, str] = {1: "new_building", 2: "forest_cleared", 3: "crop_change"}
NO_CHANGE, CHANGE, IGNORE = 0, 1, 255
_B_GAIN = 1.04  # date B: a brighter acquisition
_B_NOISE = 0.004  # extra sensor noise of date B (reflectance units)
_CROP_SWAP = {
    "crop_green": "bare_soil",
    "crop_ripe": "crop_green",
    "rapeseed": "bare_soil",
    "bare_soil": "crop_green",
    "grassland": "crop_ripe",
}


@dataclass(frozen=True, slots=True, eq=False)
class ChangeArrays:
    """In-memory two-date scene (see :func:`make_change_arrays`).

    Attributes:
        image_a, image_b: ``(bands, rows, cols)`` images of date A and date B (same grid, dtype, nodata).
        labels_a, labels_b: land-cover class codes of each date (:data:`rasterlearn.synthetic.SYNTHETIC_CLASSES`).
        change: uint8 0 (no change), 1 (change), 255 (invalid).
        kind: uint8 0 (none) or a key of :data:`CHANGE_KINDS`.
        valid, grid, band_names, nodata, scale, seed: as in :class:`rasterlearn.synthetic.SyntheticArrays`.
    """

    image_a: np.ndarray
    image_b: np.ndarray
    labels_a: np.ndarray
    labels_b: np.ndarray
    change: np.ndarray
    kind: np.ndarray
    valid: np.ndarray
    grid: Grid
    band_names: tuple[str, ...]
    nodata: float
    scale: float
    seed: int

    def change_fraction(self) -> dict[str, float]:
        """Share of the valid pixels under each kind of change."""
        n = max(int(self.valid.sum()), 1)
        return {name: float((self.kind == k).sum()) / n for k, name in CHANGE_KINDS.items()}


@dataclass(frozen=True, slots=True)
class ChangeScene:
    """Files of a two-date scene written by :func:`make_change_scene`."""

    image_a: Path
    image_b: Path
    change_raster: Path
    labels: Path
    metadata: Path
    grid: Grid
    band_names: tuple[str, ...]
    attribute: str = "change"
    layer: str = "synthetic_change"


def change_schema() -> ClassSchema:
    """The change/no-change schema (0 no change, 1 change, ignore 255)."""
    return ClassSchema(
        (ClassInfo(NO_CHANGE, "no_change", "#d9d9d9"), ClassInfo(CHANGE, "change", "#e31a1c")),
        ignore_index=IGNORE,
        background=NO_CHANGE,
    )


def _layout(
    seed: int, shape: tuple[int, int], ppm: float
) -> tuple[syn._Objects, np.ndarray, np.ndarray, dict[str, Any]]:
    """The synthetic kernel's objects (as in :func:`rasterlearn.synthetic.make_synthetic_array`).

    Returns (objects table, object ids without buildings, building ids, render arguments).
    """
    rows, cols = shape
    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float32)
    rr += 0.5
    cc += 0.5
    objs = syn._Objects.empty()
    objects, theta, u, v, cuts = syn._fields(seed, shape, ppm, objs, rr, cc)
    forest = syn._forest(seed, shape, ppm, target=0.24)
    river, lake, bank = syn._water(seed, shape, ppm)
    water = river | lake
    forest &= ~water
    rng_f = syn._rng(seed, "objects")
    lab, n_forest = ndimage.label(forest)
    first = len(objs.codes)
    for _ in range(n_forest):
        objs.add(syn.FOREST, "forest_decid", gain=rng_f.uniform(0.9, 1.1), mix=rng_f.uniform(-0.4, 0.4))
    objects[forest] = first - 1 + lab[forest]
    first = len(objs.codes)
    objs.add(syn.WATER, "water_clear", gain=rng_f.uniform(0.9, 1.1))
    objs.add(syn.WATER, "water_clear", gain=rng_f.uniform(0.9, 1.1))
    objects[river] = first
    objects[lake] = first + 1
    road_ids, lines, village = syn._roads(seed, shape, ppm, theta, cuts, objs)
    road = road_ids > 0
    objects[road] = road_ids[road]
    bld_ids = syn._buildings(seed, shape, ppm, lines, village, road | water, objs)
    render = {"ppm": ppm, "u": u, "v": v, "rr": rr, "cc": cc, "bank": bank, "forest": forest}
    return objs, objects, bld_ids, render


def make_change_arrays(
    *,
    size: tuple[int, int] | int = (256, 256),
    bands: int = 4,
    dtype: syn.SyntheticDtype = "uint16",
    seed: int = 0,
    crs: str | int | CRS = "EPSG:32633",
    resolution: float = 2.0,
    nodata_corner: bool = False,
    new_buildings: float = 0.5,
    changed_fields: float = 0.3,
    cleared_forest: float = 0.5,
    nuisance: float = 1.0,
) -> ChangeArrays:
    """Generate the two-date scene in memory (no I/O).

    Args:
        size, bands, dtype, seed, crs, resolution, nodata_corner: see
            :func:`rasterlearn.synthetic.make_synthetic_array`.
        new_buildings: share of the buildings that appear between the dates (at least one).
        changed_fields: share of the field parcels that change crop.
        cleared_forest: share of the largest forest patch that is cleared (a disc).
        nuisance: strength of the unlabelled differences of date B (season, atmosphere, illumination).

    Raises:
        InputError: shares outside [0, 1], or the arguments :func:`make_synthetic_array` refuses.
    """
    _check_shares(new_buildings, changed_fields, cleared_forest, nuisance)
    grid, names = _change_grid(size, bands, crs, resolution)
    shape = (grid.height, grid.width)
    ppm = 1.0 / float(resolution)
    objs, base, bld_ids, render = _layout(seed, shape, ppm)
    rng = np.random.default_rng([int(seed), 101, CHANGE_VERSION])
    objects_b = np.where(bld_ids > 0, bld_ids, base).astype(np.int32)
    objects_a = _new_buildings(bld_ids, base, objects_b, rng, new_buildings)
    cleared, clear_id = _clear_forest(objs, objects_b, rng, ppm, cleared_forest)
    objs_b = _change_crops(objs, objects_a, objects_b, clear_id, rng, changed_fields)
    valid = syn._corner(seed, shape) if nodata_corner else np.ones(shape, dtype=bool)
    mat_a = np.asarray(objs.materials)
    mat_b = np.asarray(objs_b.materials)
    kind = np.zeros(shape, dtype=np.uint8)
    kind[(mat_a[objects_a] != mat_b[objects_b]) & (objects_a == objects_b)] = 3
    kind[cleared] = 2
    kind[objects_a != objects_b] = np.where(cleared, 2, 1)[objects_a != objects_b]
    kind[~valid] = 0
    change = np.where(valid, (kind > 0).astype(np.uint8), np.uint8(IGNORE)).astype(np.uint8)
    codes_u8 = np.asarray(objs.codes, dtype=np.uint8)
    labels_a = np.where(valid, codes_u8[objects_a], np.uint8(syn.IGNORE)).astype(np.uint8)
    labels_b = np.where(valid, codes_u8[objects_b], np.uint8(syn.IGNORE)).astype(np.uint8)
    r = render
    args = (valid, names, r["ppm"], r["u"], r["v"], r["rr"], r["cc"], r["bank"])
    image_a, scale, nodata = syn._render(
        seed, objs, np.where(valid, objects_a, 0), labels_a, *args, r["forest"], dtype
    )
    image_b, _, _ = syn._render(
        seed, objs_b, np.where(valid, objects_b, 0), labels_b, *args, r["forest"] & ~cleared, dtype
    )
    image_b = _second_acquisition(image_b, labels_b, names, valid, scale, nodata, rng, nuisance)
    return ChangeArrays(
        image_a, image_b, labels_a, labels_b, change, kind, valid, grid, names, nodata, scale, int(seed)
    )


def _check_shares(
    new_buildings: float, changed_fields: float, cleared_forest: float, nuisance: float
) -> None:
    """Raise :class:`InputError` for a share outside [0, 1]."""
    for name, share in (
        ("new_buildings", new_buildings),
        ("changed_fields", changed_fields),
        ("cleared_forest", cleared_forest),
        ("nuisance", nuisance),
    ):
        if not 0.0 <= share <= 1.0:
            raise InputError(f"{name} is a share in [0, 1], got {share}")


def _change_grid(
    size: tuple[int, int] | int, bands: int, crs: str | int | CRS, resolution: float
) -> tuple[Grid, tuple[str, ...]]:
    """The scene's grid (north-up, ``resolution`` units per pixel) and band names; checks size, bands, CRS."""
    rows, cols = syn._size(size)
    if rows < syn._MIN_SIZE or cols < syn._MIN_SIZE:
        raise InputError(f"The synthetic change scene needs at least {syn._MIN_SIZE} x {syn._MIN_SIZE} px")
    names = syn.synthetic_band_names(bands)
    out_crs = syn._check_crs(crs)
    x0, y0 = syn._grid_origin(out_crs, (rows, cols), float(resolution))
    grid = Grid(
        rows, cols, Affine(float(resolution), 0.0, float(x0), 0.0, -float(resolution), float(y0)), out_crs
    )
    return grid, names


def _new_buildings(
    bld_ids: np.ndarray, base: np.ndarray, objects_b: np.ndarray, rng: np.random.Generator, share: float
) -> np.ndarray:
    """Date A's objects: a ``share`` of the buildings (at least one) does not exist yet, and date A shows
    what lies under them."""
    bids = np.unique(bld_ids[bld_ids > 0])
    new = bids[rng.random(len(bids)) < share] if len(bids) else bids
    if len(bids) and share > 0 and not len(new):
        new = bids[:1]
    return np.where(np.isin(bld_ids, new), base, objects_b).astype(np.int32)


def _clear_forest(
    objs: syn._Objects, objects_b: np.ndarray, rng: np.random.Generator, ppm: float, share: float
) -> tuple[np.ndarray, int]:
    """Clear a disc covering ``share`` of the largest forest patch in date B: it becomes a new bare-soil object
    (added to ``objs``; ``objects_b`` is changed in place). Returns the cleared pixels and the new object's id
    (-1 when nothing is cleared)."""
    codes = np.asarray(objs.codes)
    is_forest = codes[objects_b] == syn.FOREST
    cleared = np.zeros(objects_b.shape, dtype=bool)
    clear_id = -1
    if is_forest.any() and share > 0:
        fid = np.bincount(objects_b[is_forest]).argmax()
        patch = objects_b == fid
        pr, pc = np.nonzero(patch)
        k = int(rng.integers(len(pr)))
        dist = np.hypot(pr - pr[k], pc - pc[k])
        radius = np.quantile(dist, share)
        cleared[pr[dist <= radius], pc[dist <= radius]] = True
        clear_id = objs.add(syn.FIELD, "bare_soil", gain=1.0, row_amp=0.08, row_period=10.0 * ppm, row_axis=0)
        objects_b[cleared] = clear_id
    return cleared, clear_id


def _change_crops(
    objs: syn._Objects,
    objects_a: np.ndarray,
    objects_b: np.ndarray,
    clear_id: int,
    rng: np.random.Generator,
    share: float,
) -> syn._Objects:
    """Date B's objects table: a ``share`` of the field parcels present in both dates (at least one: the
    largest) gets another crop (another material)."""
    objs_b = copy.deepcopy(objs)
    sizes = np.bincount(objects_b[objects_a == objects_b].ravel(), minlength=len(objs.codes))
    field_ids = [i for i, c in enumerate(objs.codes) if c == syn.FIELD and i != clear_id and sizes[i] > 0]
    picked = [i for i in field_ids if rng.random() < share]
    if field_ids and share > 0 and not picked:  # at least one parcel: the largest
        picked = [max(field_ids, key=lambda i: int(sizes[i]))]
    for i in picked:
        objs_b.materials[i] = _CROP_SWAP[objs.materials[i]]
    return objs_b


def _second_acquisition(
    image: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    valid: np.ndarray,
    scale: float,
    nodata: float,
    rng: np.random.Generator,
    nuisance: float,
) -> np.ndarray:
    """Date B as another acquisition and season (unlabelled differences), then quantized again."""
    n = np.float32(nuisance)
    refl = image.astype(np.float32) * np.float32(scale)
    lam = np.asarray([syn.WAVELENGTHS_NM[b] for b in names], dtype=np.float32)[:, None, None]
    gain = _B_GAIN * (1.0 + n * np.clip(0.08 * rng.standard_normal(len(names)), -0.15, 0.15))
    refl *= gain.astype(np.float32)[:, None, None]
    refl *= 1.0 + n * 0.08 * syn._noise(rng, labels.shape, max(labels.shape) / 3.0)[None]
    leaf_off = np.where(lam > 700, 1.0 - 0.25 * n, 1.0 + 0.2 * n).astype(np.float32)
    refl = np.where(labels[None] == syn.FOREST, refl * leaf_off, refl)
    refl = np.where(labels[None] == syn.WATER, refl * (1.0 + 0.4 * n), refl)
    refl = refl + _B_NOISE * (1.0 + n) * rng.standard_normal(refl.shape, dtype=np.float32)
    if image.dtype == np.float32:
        out = np.maximum(refl, 1e-4).astype(np.float32)
        out[:, ~valid] = np.nan
        return out
    top = np.iinfo(image.dtype).max
    out = np.clip(np.rint(refl / scale), 1, top).astype(image.dtype)
    out[:, ~valid] = np.asarray(nodata).astype(image.dtype)
    return out


def change_polygons(arrays: ChangeArrays) -> gpd.GeoDataFrame:
    """Change polygons (pixel edges): columns ``change`` (1), ``kind`` (name), ``kind_code``."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape as to_shape

    geoms, kinds = [], []
    for geom, value in shapes(
        arrays.kind, mask=arrays.kind > 0, connectivity=4, transform=arrays.grid.transform
    ):
        geoms.append(to_shape(geom))
        kinds.append(int(value))
    return gpd.GeoDataFrame(
        {
            "change": np.ones(len(kinds), dtype=np.int32),
            "kind": [CHANGE_KINDS[k] for k in kinds],
            "kind_code": np.asarray(kinds, dtype=np.int32),
        },
        geometry=geoms,
        crs=arrays.grid.crs,
    )


_FILES = {
    "image_a": "synthetic_change_a.tif",
    "image_b": "synthetic_change_b.tif",
    "change_raster": "synthetic_change.tif",
    "labels": "synthetic_change.gpkg",
    "metadata": "synthetic_change.json",
}


def make_change_scene(out_dir: str | os.PathLike[str], **kwargs: Any) -> ChangeScene:
    """Write the two-date scene: both images (COGs), the change raster and polygons, and a JSON record.

    Files in ``out_dir``: ``synthetic_change_a.tif``, ``synthetic_change_b.tif`` (tags ``SYNTHETIC=yes``,
    ``DATE=A/B``), ``synthetic_change.tif`` (0/1, 255 invalid), ``synthetic_change.gpkg`` (layer
    ``synthetic_change``: ``change`` = 1, ``kind``) and ``synthetic_change.json`` (parameters, change shares;
    written last). Keyword arguments: those of :func:`make_change_arrays`.
    """
    from rasterlearn.io.vector import write_vector
    from rasterlearn.io.writer import write_array

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in _FILES.items()}
    with contextlib.suppress(FileNotFoundError):
        paths["metadata"].unlink()  # the completion marker: removed first, written last
    arrays = make_change_arrays(**kwargs)
    for key, img, date in (("image_a", arrays.image_a, "A"), ("image_b", arrays.image_b, "B")):
        write_array(
            paths[key],
            img,
            arrays.grid,
            nodata=arrays.nodata,
            band_descriptions=list(arrays.band_names),
            tags={"SYNTHETIC": "yes", "DATE": date, "SYNTHETIC_GENERATOR": "rasterlearn.synthetic_change"},
        )
    schema = change_schema()
    write_array(
        paths["change_raster"],
        arrays.change,
        arrays.grid,
        nodata=IGNORE,
        band_descriptions=["change"],
        **class_map_style(schema),
        tags={"SYNTHETIC": "yes", "CLASSES": schema.describe()},
    )
    write_vector(change_polygons(arrays), paths["labels"], layer="synthetic_change")
    params = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in kwargs.items()}
    atomic_write_json(
        paths["metadata"],
        {
            "synthetic": True,
            "generator": "rasterlearn.synthetic_change",
            "version": CHANGE_VERSION,
            "parameters": params,
            "grid": arrays.grid.to_dict(),
            "band_names": list(arrays.band_names),
            "change_fraction": arrays.change_fraction(),
            "files": {k: p.name for k, p in paths.items()},
        },
    )
    log.info("Wrote the synthetic two-date scene to %s: %s", out, json.dumps(arrays.change_fraction()))
    return ChangeScene(
        paths["image_a"],
        paths["image_b"],
        paths["change_raster"],
        paths["labels"],
        paths["metadata"],
        arrays.grid,
        arrays.band_names,
    )
