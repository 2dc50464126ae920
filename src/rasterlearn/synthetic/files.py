"""The synthetic scene as files: label polygons and reference points, and :func:`make_synthetic_scene`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pyproj import CRS

from rasterlearn._util import atomic_write_json, atomic_write_text
from rasterlearn.class_maps import class_map_style
from rasterlearn.errors import OutputError
from rasterlearn.grid import Grid
from rasterlearn.labels import ClassSchema
from rasterlearn.synthetic.scene import _check_crs, _size, make_synthetic_array
from rasterlearn.synthetic.spec import (
    IGNORE,
    SYNTHETIC_VERSION,
    WATER,
    SyntheticArrays,
    SyntheticDtype,
    SyntheticScene,
)

if TYPE_CHECKING:  # geopandas is imported lazily: the kernel needs only numpy/scipy
    import geopandas as gpd

# one logger for the whole module, as before the split
log = logging.getLogger("rasterlearn.synthetic")


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
