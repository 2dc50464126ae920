"""Multi-date inputs of :func:`rasterlearn.predict.predict_raster`: one raster per date read as one stack.

A model trained on multi-date chips (``model_kwargs`` ``timesteps`` > 1, see
:mod:`rasterlearn.models_temporal`) takes ``T*C`` bands, date by date. Prediction opens the dates as a
:class:`rasterlearn.io.stack.StackReader` (later dates resampled onto the first date's grid), so the
streaming engine, its writer and its resume run unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasterlearn._util import file_identity, is_virtual
from rasterlearn.errors import InputError
from rasterlearn.io.raster import ImageReader, RasterReader
from rasterlearn.io.stack import NodataPolicy, StackReader, split_date_band

__all__ = [
    "as_raster_list",
    "assumed_nodata",
    "model_timesteps_of",
    "open_input",
    "open_stack_input",
    "resolve_bands",
    "stack_provenance",
]

log = logging.getLogger("rasterlearn.predict")


def as_raster_list(raster: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """One path or a sequence of paths (one per date) as a list of paths (at least one).

    URLs and GDAL virtual paths stay strings: ``Path`` would collapse their ``//``.
    """
    items = [raster] if isinstance(raster, str | Path) else list(raster)
    paths: list[str | Path] = [str(p) if is_virtual(p) else Path(p) for p in items]
    if not paths:
        raise InputError("No input raster: give a raster, or one --image per date")
    return paths


def model_timesteps_of(meta: Any) -> int:
    """Dates a model package expects (1 for single-date models)."""
    kwargs = getattr(meta, "model_kwargs", None) or {}
    return int(kwargs.get("timesteps", 1) or 1)


def open_stack_input(
    rasters: Sequence[str | Path],
    meta: Any,
    bands: Sequence[int | str] | None,
    nodata_policy: NodataPolicy = "all-valid",
) -> tuple[StackReader, list[int]]:
    """Open the dates as a stack for a multi-date model; returns the reader and the per-date bands.

    Bands are matched on the first date (the model's band names without their ``@t<date>`` suffix, or
    ``bands``) and the same selection is read from every date.

    Raises:
        InputError: the number of rasters differs from the model's dates, or the bands do not match.
    """
    t = model_timesteps_of(meta)
    names = ", ".join(str(p) for p in rasters)
    if len(rasters) != t:
        if t == 1:
            raise InputError(
                f"The model was trained on single-date images but {len(rasters)} rasters were given "
                f"({names}); predict one raster at a time, or train on multi-date chips"
            )
        raise InputError(
            f"The model was trained on {t} dates but {len(rasters)} raster(s) were given ({names}); give one "
            f"--image per date, in the training order (e.g. --image A.tif --image B.tif)"
        )
    per_date = len(meta.bands) // t
    model_bands = [split_date_band(b)[0] for b in meta.bands[:per_date]]
    idx = meta.band_indexes if meta.band_indexes and len(meta.band_indexes) == per_date else None
    with RasterReader(rasters[0]) as probe:
        band_idx = resolve_bands(probe, model_bands, idx, bands)
    return StackReader(rasters, band_idx, nodata_policy=nodata_policy), band_idx


def resolve_bands(
    reader: RasterReader,
    model_bands: Sequence[str],
    band_indexes: Sequence[int] | None,
    override: Sequence[int | str] | None = None,
) -> list[int]:
    """Choose the raster's 1-based bands that feed the model, in the model's order.

    Order of preference: an explicit ``override``; the model's band names matched to the raster's band
    descriptions (case-insensitive); the model's training band indexes; position (when the raster has
    exactly as many bands as the model). Anything else is an :class:`InputError` naming both band lists.
    """
    ds = reader.dataset
    count = ds.count
    described = [d or "" for d in ds.descriptions]
    have = ", ".join(f"{i + 1}={d!r}" if d else str(i + 1) for i, d in enumerate(described))
    need = len(model_bands)
    if override:
        if len(override) != need:
            raise InputError(
                f"--bands selects {len(override)} band(s) but the model expects {need} "
                f"({', '.join(model_bands)})"
            )
        return RasterReader(reader.path, list(override)).band_indexes
    lower = [d.lower() for d in described]
    idx_by_name = [lower.index(b.lower()) + 1 if b.lower() in lower else None for b in model_bands]
    if all(i is not None for i in idx_by_name):
        chosen = [int(i) for i in idx_by_name if i is not None]
        log.info("Model bands matched by description: %s -> raster bands %s", list(model_bands), chosen)
        return chosen
    found = [b for b, i in zip(model_bands, idx_by_name, strict=True) if i is not None]
    if found:
        missing = [b for b, i in zip(model_bands, idx_by_name, strict=True) if i is None]
        raise InputError(
            f"{reader.path} lacks the model's band(s) {missing} (it has {have}); the model expects "
            f"{list(model_bands)} in that order. Use a raster with these bands or pass --bands."
        )
    if count != need and band_indexes and list(band_indexes) == list(range(1, need + 1)):
        raise InputError(
            f"{reader.path} has {count} band(s) ({have}) but the model was trained on {need} "
            f"({', '.join(model_bands)}), and no band description names them. Pass --bands with the {need} "
            f"bands to use (e.g. --bands {','.join(str(i) for i in band_indexes)}) if the raster really "
            f"holds the training bands"
        )
    if band_indexes and len(band_indexes) == need and max(band_indexes) <= count:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; using the training band "
            "indexes %s (raster bands: %s)",
            list(model_bands),
            list(band_indexes),
            have,
        )
        return [int(i) for i in band_indexes]
    if count == need:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; feeding raster bands 1..%d in order",
            list(model_bands),
            count,
        )
        return list(range(1, count + 1))
    data_bands = [i for i in range(1, count + 1) if i not in reader.alpha_bands]
    if len(data_bands) == need and len(data_bands) < count:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; feeding raster bands %s in order "
            "(band(s) %s are alpha: the validity mask)",
            list(model_bands),
            data_bands,
            reader.alpha_bands,
        )
        return data_bands
    raise InputError(
        f"{reader.path} has {count} band(s) ({have}) but the model expects {need}: "
        f"{list(model_bands)}. Pass --bands with {need} band indexes or descriptions."
    )


def open_input(
    rasters: Sequence[str | Path],
    meta: Any,
    bands: Sequence[int | str] | None,
    nodata_policy: NodataPolicy = "all-valid",
) -> tuple[ImageReader, list[int]]:
    """Open the model's input: one raster's bands matched by :func:`resolve_bands`, or the dates as a stack
    (:func:`open_stack_input`) for a multi-date model or several rasters. Returns the reader and the bands."""
    if len(rasters) > 1 or model_timesteps_of(meta) > 1:
        return open_stack_input(rasters, meta, bands, nodata_policy)
    with RasterReader(rasters[0]) as probe:
        band_idx = resolve_bands(probe, meta.bands, meta.band_indexes, bands)
    return RasterReader(rasters[0], band_idx), band_idx


def assumed_nodata(reader: ImageReader, raster: str | Path, nodata: float | None, meta: Any) -> float | None:
    """The input nodata value to assume when the raster declares none: ``nodata`` or the package's
    ``input_nodata`` (logged); None when the raster declares its own."""
    if reader.nodata is not None or any(b.nodata is not None for b in reader.bands):
        return None
    in_nodata = nodata if nodata is not None else meta.input_nodata
    if in_nodata is not None:
        log.info(
            "%s declares no nodata; treating %s as nodata (%s)",
            raster,
            in_nodata,
            "--nodata" if nodata is not None else "model package input_nodata",
        )
    return in_nodata


def stack_provenance(rasters: Sequence[str | Path], reader: Any, *, identity: bool = False) -> dict[str, Any]:
    """Extra tag entries (``identity``: and fingerprint entries) of a multi-date job; empty for one raster."""
    if len(rasters) < 2:
        return {}
    out: dict[str, Any] = {
        "dates": [str(p) for p in rasters],
        "nodata_policy": getattr(reader, "nodata_policy", None),
        "resampled_dates": list(getattr(reader, "resampled", [])),
    }
    if identity:
        out["date_identity"] = [file_identity(p) for p in rasters[1:]]
    return out
