"""Multi-date inputs of :func:`rasterlearn.predict.predict_raster`: one raster per date read as one stack.

A model trained on multi-date chips (``model_kwargs`` ``timesteps`` > 1, see
:mod:`rasterlearn.models_temporal`) takes ``T*C`` bands, date by date. Prediction opens the dates as a
:class:`rasterlearn.io.stack.StackReader` (later dates resampled onto the first date's grid), so the
streaming engine, its writer and its resume run unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasterlearn._util import file_identity, is_virtual
from rasterlearn.errors import InputError
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.stack import NodataPolicy, StackReader, split_date_band

__all__ = ["as_raster_list", "model_timesteps_of", "open_stack_input", "stack_provenance"]


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
    from rasterlearn.predict import resolve_bands

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
