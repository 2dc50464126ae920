"""Label rasters and grids: which paths are rasters, raw label-raster values to class codes, image validity
onto label masks, and whether two grids lie in the same place."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.errors import InputError
from rasterlearn.grid import Grid
from rasterlearn.labels.schema import ClassSchema, UnknownPolicy

log = logging.getLogger("rasterlearn.labels")  # one logger for the package, as before the split

_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc"}


def is_raster_path(path: str | Path) -> bool:
    """True when ``path`` looks like a raster (by extension), e.g. a pre-rasterized label raster."""
    return Path(str(path)).suffix.lower() in _RASTER_SUFFIXES


def apply_validity(mask: np.ndarray, valid: np.ndarray, ignore_index: int) -> np.ndarray:
    """Set ``ignore_index`` where ``valid`` is False (image nodata -> ignore), in place; returns ``mask``."""
    if valid.shape != mask.shape:
        raise InputError(f"validity mask {valid.shape} does not match label mask {mask.shape}")
    mask[~valid] = ignore_index
    return mask


def values_to_codes(
    raw: np.ndarray,
    valid: np.ndarray,
    schema: ClassSchema,
    *,
    unknown: UnknownPolicy = "error",
    source: str = "label raster",
) -> np.ndarray:
    """Map raw label-raster values to schema codes; invalid pixels and (with ``unknown="ignore"``) values
    outside the schema become the ignore code.

    Raises:
        InputError: a non-integer value, or a value not in the schema with ``unknown="error"``.
    """
    out = np.full(raw.shape, schema.ignore_index, dtype=schema.mask_dtype)
    if not valid.any():
        return out
    uniq, inv = np.unique(raw[valid], return_inverse=True)
    table = np.empty(len(uniq), dtype="int64")
    for i, v in enumerate(uniq.tolist()):
        if isinstance(v, float) and not v.is_integer():
            raise InputError(
                f"{source} holds the non-integer label value {v}; label rasters must hold integer "
                f"class values"
            )
        key = int(v)
        try:
            table[i] = schema.code_of(key)
        except InputError:
            if unknown == "error":
                raise InputError(
                    f"{source}: label value {key} is not in the class schema ({schema.describe()}). "
                    f"Add it to the schema, or pass unknown='ignore' (CLI: --unknown-classes ignore) "
                    f"to treat it as ignore."
                ) from None
            log.warning("%s: label value %d is not in the schema; treated as ignore", source, key)
            table[i] = schema.ignore_index
    out[valid] = table[inv.reshape(-1)].astype(out.dtype)
    return out


def same_place(a: Grid, b: Grid, tolerance_px: float = 0.25) -> bool:
    """Whether grid ``b``'s CRS description puts ``a``'s corners and centre within ``tolerance_px`` pixels of
    where ``a``'s CRS puts them (the same grid described by two CRS definitions)."""
    from pyproj import Transformer

    if a.crs is None or b.crs is None:
        return a.crs is None and b.crs is None
    try:
        tr = Transformer.from_crs(a.crs, b.crs, always_xy=True)
    except Exception:
        return False
    left, bottom, right, top = a.bounds
    xs = np.array([left, right, left, right, (left + right) / 2])
    ys = np.array([top, top, bottom, bottom, (top + bottom) / 2])
    tx, ty = tr.transform(xs, ys)
    shift = np.hypot(np.asarray(tx) - xs, np.asarray(ty) - ys)
    if not np.all(np.isfinite(shift)):
        return False
    return bool(shift.max() <= tolerance_px * min(a.res))


def crs_name(crs: Any) -> str:
    """A short human name of a CRS (``EPSG:xxxx (name)`` when it has a code)."""
    if crs is None:
        return "(none)"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg} ({crs.name})" if epsg else repr(crs.name)
