"""The one validity policy: which pixels of a raster read hold valid data.

A pixel is valid only where every selected band is. A band value is invalid where it equals the band's
declared nodata, is NaN or ±inf in float data, is masked by GDAL's per-band mask (a per-dataset internal or
external mask, GDAL's alpha band), is transparent in an alpha band read beside the data, or equals the
nodata value the user assumes for a raster that declares none (``--nodata``, a model package's
``input_nodata``).

:class:`~rasterlearn.io.raster.RasterReader` plans its mask sources once per dataset with
:func:`mask_sources`, reads the data (and, when the plan asks, GDAL's masks and the alpha bands) and turns
them into the masks with :func:`block_validity`. Every stage takes its masks from the reader; the functions
here are the policy itself, for anyone who holds a read block and its dataset's masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import MaskFlags

__all__ = [
    "MaskSources",
    "apply_assumed_nodata",
    "band_valid",
    "block_validity",
    "mask_sources",
]


@dataclass(frozen=True, slots=True)
class MaskSources:
    """Where the validity of a band selection comes from, decided once from the dataset's mask flags.

    Attributes:
        gdal_mask: read GDAL's per-band masks (``read_masks``): a per-dataset mask or an alpha band GDAL
            takes as the mask. Otherwise the mask is computed from the data already read (declared nodata,
            NaN/inf), which is what GDAL would derive from it.
        alpha_mask: 1-based indexes of alpha bands outside the selection that GDAL does not take as the mask
            (e.g. the 5th band of RGBN + alpha): read beside the data, a pixel is valid where all are > 0.
        alpha_as_data: selected bands that GDAL flags as alpha, read as data: not used as a mask.
    """

    gdal_mask: bool
    alpha_mask: tuple[int, ...]
    alpha_as_data: tuple[int, ...]


def mask_sources(
    mask_flags: Sequence[Sequence[MaskFlags]], band_indexes: Sequence[int], alpha_bands: Sequence[int]
) -> MaskSources:
    """The :class:`MaskSources` of the bands ``band_indexes`` (1-based) of a dataset.

    Args:
        mask_flags: GDAL's mask flags of every band of the dataset (rasterio's ``mask_flag_enums``).
        band_indexes: the selected bands, 1-based.
        alpha_bands: the dataset's bands whose colour interpretation is alpha, 1-based.
    """
    flags = [mask_flags[i - 1] for i in band_indexes]
    # A mask that GDAL derives from the data alone (nodata value or all-valid) is computed from the array
    # already read; alpha bands and per-dataset masks are read from GDAL.
    gdal_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags) or any(
        not f for f in flags
    )
    alpha_as_data = [i for i in band_indexes if i in alpha_bands]
    # GDAL takes an alpha band as the mask only in its own layouts (gray + alpha, RGB + alpha); any other
    # band flagged alpha (e.g. the 5th of RGBN + alpha) is left out of the data, so it must still mark
    # validity: it is read beside the data
    alpha_mask = (
        []
        if alpha_as_data or any(MaskFlags.alpha in f for f in flags)
        else [i for i in alpha_bands if i not in band_indexes]
    )
    if alpha_as_data:
        # The caller chose a band GDAL flags as alpha as *data* (a 4-band uint8 RGBN GeoTIFF written with
        # default options looks like RGBA): then it is not a mask, and validity comes from nodata alone.
        gdal_mask = any(MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in flags)
    return MaskSources(gdal_mask, tuple(alpha_mask), tuple(alpha_as_data))


def band_valid(band: np.ndarray, nodata: float | None) -> np.ndarray:
    """Validity of one band (rows, cols) from its values: not the declared ``nodata``, finite if float.

    A NaN ``nodata`` is the NaN test itself. Returns a new array.
    """
    floating = np.issubdtype(band.dtype, np.floating)
    if nodata is not None and not math.isnan(nodata):
        valid = band != np.asarray(nodata).astype(band.dtype)
        if floating:
            valid &= np.isfinite(band)
        return valid
    return np.isfinite(band) if floating else np.ones(band.shape, dtype=bool)


def apply_assumed_nodata(valid: np.ndarray, data: np.ndarray, nodata: float | None) -> np.ndarray:
    """``valid`` without the pixels where any band of ``data`` (bands, rows, cols) equals ``nodata``.

    The user's nodata value (``--nodata``, a model package's ``input_nodata``) for a raster that declares
    none: a pixel is invalid where any selected band holds it, as with a declared nodata. ``None``: ``valid``
    unchanged. Returns a new array.
    """
    if nodata is None:
        return valid
    return valid & np.all(data != np.asarray(nodata).astype(data.dtype), axis=0)


def block_validity(
    data: np.ndarray,
    nodata: Sequence[float | None],
    *,
    gdal_masks: np.ndarray | None = None,
    alpha: np.ndarray | None = None,
    assumed_nodata: float | None = None,
    band_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel validity (rows, cols) of a block and, when ``band_masks``, per-band validity (bands, rows, cols).

    Args:
        data: the block (bands, rows, cols) in the file's dtype.
        nodata: each band's declared nodata (``None``: none).
        gdal_masks: GDAL's per-band masks of the block (``read_masks``, 0 = invalid), when
            :attr:`MaskSources.gdal_mask`; they replace the declared ``nodata`` test (GDAL's masks already
            hold it). ``None``: validity from ``nodata`` and the values.
        alpha: the alpha bands read beside the data (:attr:`MaskSources.alpha_mask`); a pixel is valid
            where all are > 0.
        assumed_nodata: the user's nodata for a raster that declares none (:func:`apply_assumed_nodata`).
        band_masks: also return the per-band validity.
    """
    per_band: np.ndarray | None
    if gdal_masks is not None:
        masked = gdal_masks > 0
        if np.issubdtype(data.dtype, np.floating):
            masked &= np.isfinite(data)
        valid = np.asarray(masked.all(axis=0))
        per_band = masked if band_masks else None
    elif band_masks:
        bands = np.ones(data.shape, dtype=bool)
        for k in range(data.shape[0]):
            bands[k] = band_valid(data[k], nodata[k])
        valid = np.asarray(bands.all(axis=0))
        per_band = bands
    else:
        per_band = None
        # one pass per band straight into the pixel mask: no (bands, rows, cols) temporary
        valid = band_valid(data[0], nodata[0])
        for k in range(1, data.shape[0]):
            valid &= band_valid(data[k], nodata[k])
    if alpha is not None:
        opaque = (alpha > 0).all(axis=0)
        valid = valid & opaque
        if per_band is not None:
            per_band &= opaque
    if assumed_nodata is None:
        return valid, per_band
    if per_band is not None:
        per_band &= data != np.asarray(assumed_nodata).astype(data.dtype)
    return apply_assumed_nodata(valid, data, assumed_nodata), per_band
