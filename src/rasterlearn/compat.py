"""Is a model fit for this imagery, and is a model package consistent with its weights?

:func:`check_imagery` compares a raster with what a model package records about its training data
(band count, value range, ground sample distance) before prediction. Mismatches beyond a tolerance are
errors that name both sides and the explicit override; with the override they are warnings, and the
returned notes go into the output's provenance.

:func:`check_first_layer` explains a package whose ``model.json`` band count disagrees with its weights,
instead of the state-dict key mismatch PyTorch reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from rasterlearn.errors import InputError, ModelError
from rasterlearn.io.raster import ImageReader, band_statistics
from rasterlearn.normalize import Normalization

__all__ = ["RESOLUTION_TOLERANCE", "check_first_layer", "check_imagery"]

log = logging.getLogger(__name__)

RESOLUTION_TOLERANCE = 0.25  # relative difference of pixel size still accepted without --allow-...
_MAX_NORMALIZED_MEAN = 6.0  # |mean| of the normalized sample beyond which values are in other units
_NORMALIZED_STD_RANGE = (0.02, 50.0)


def check_imagery(
    meta: Any,
    reader: ImageReader,
    *,
    allow_resolution_mismatch: bool = False,
    allow_dtype_mismatch: bool = False,
) -> list[str]:
    """Raise :class:`InputError` when ``reader`` is not imagery the model ``meta`` can read.

    Checks the pixel size against the training ``gsd`` (more than 25 % apart: an error unless
    ``allow_resolution_mismatch``) and, when the dtype differs from the training dtype, the value range
    (a sample normalized with the package's normalization far from the training distribution: an error
    unless ``allow_dtype_mismatch``). Returns notes on accepted mismatches (for provenance).
    """
    notes: list[str] = []
    grid = reader.grid
    if meta.gsd and grid.crs is not None and not grid.is_geographic:
        res = float(grid.res[0])
        rel = abs(res - meta.gsd) / meta.gsd
        if rel > RESOLUTION_TOLERANCE:
            msg = (
                f"{reader.path} has {res:.4g} {meta.crs_units or 'CRS-unit'} pixels but the model was trained "
                f"on {meta.gsd:.4g} (a {rel:.0%} difference)"
            )
            if not allow_resolution_mismatch:
                raise InputError(
                    f"{msg}; objects appear at another scale than in training. Resample the raster to "
                    f"{meta.gsd:.4g} (e.g. gdalwarp -tr {meta.gsd:g} {meta.gsd:g}), or pass "
                    f"--allow-resolution-mismatch to predict anyway"
                )
            log.warning("%s; predicting anyway (--allow-resolution-mismatch)", msg)
            notes.append(f"resolution mismatch accepted: {res:.4g} vs training {meta.gsd:.4g}")
    if meta.input_dtype and meta.input_dtype != reader.dtype:
        note = _check_value_range(meta, reader, allow_dtype_mismatch)
        if note:
            notes.append(note)
    return notes


def _check_value_range(meta: Any, reader: ImageReader, allow: bool) -> str | None:
    norm: Normalization = meta.norm
    if norm.method == "none" or norm.bands != reader.count:
        log.info(
            "Raster dtype %s differs from the training dtype %s; values are used as they are",
            reader.dtype,
            meta.input_dtype,
        )
        return None
    stats = band_statistics(reader, max_windows=8, sample_size=20_000)
    off, scale = np.asarray(norm.offset), np.asarray(norm.scale)
    mean = (np.asarray([s.mean for s in stats]) - off) / scale
    std = np.asarray([s.std for s in stats]) / scale
    lo, hi = _NORMALIZED_STD_RANGE
    bad = [i for i in range(len(stats)) if abs(mean[i]) > _MAX_NORMALIZED_MEAN or not lo <= std[i] <= hi]
    if not bad:
        log.info(
            "Raster dtype %s differs from the training dtype %s, but its values lie in the training range",
            reader.dtype,
            meta.input_dtype,
        )
        return None
    i = bad[0]
    msg = (
        f"{reader.path} holds {reader.dtype} values unlike the {meta.input_dtype} training data: band "
        f"{meta.bands[i]!r} has mean {stats[i].mean:.4g} and std {stats[i].std:.4g}, i.e. "
        f"{mean[i]:+.1f} and {std[i]:.3g} after the package's {norm.method} normalization (expected about "
        f"0 and 1)"
    )
    if not allow:
        raise InputError(
            f"{msg}. Rescale the raster to the training units (e.g. gdal_translate -ot {meta.input_dtype} "
            f"-scale), or pass --allow-dtype-mismatch to predict anyway"
        )
    log.warning("%s; predicting anyway (--allow-dtype-mismatch)", msg)
    return f"value range mismatch accepted: {reader.dtype} vs training {meta.input_dtype}"


def check_first_layer(
    model_state: Mapping[str, Any], weights: Mapping[str, Any], in_channels: int, source: str
) -> None:
    """Raise :class:`ModelError` when ``weights``' first layer takes another band count than the package.

    ``model_state`` is the freshly built model's state dict (built for ``in_channels`` bands).
    """
    first = next(
        (k for k, v in model_state.items() if getattr(v, "ndim", 0) == 4 and v.shape[1] == in_channels),
        None,
    )
    if first is None:
        return
    shape = model_state[first].shape
    got = weights.get(first)
    if got is None:  # renamed key: look for a conv kernel of the same output width and kernel size
        got = next(
            (
                v
                for k, v in weights.items()
                if k not in model_state
                and getattr(v, "ndim", 0) == 4
                and v.shape[0] == shape[0]
                and tuple(v.shape[2:]) == tuple(shape[2:])
            ),
            None,
        )
    if got is not None and getattr(got, "ndim", 0) == 4 and got.shape[1] != in_channels:
        raise ModelError(
            f"The package's band count ({in_channels}) and its weights ({int(got.shape[1])} input channels) "
            f"disagree in {source}: model.json lists {in_channels} bands but the first layer "
            f"{first!r} of the weights takes {int(got.shape[1])}. Restore the package's original model.json "
            f"(in_channels, bands, normalization) or retrain"
        )
