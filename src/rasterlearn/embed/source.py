"""The input side of :func:`rasterlearn.embed.embed`: the raster as the tiles are read (reprojected through a
GDAL warped VRT when asked) and how its values are normalized before the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.embed.backbones import Backbone
from rasterlearn.embed.request import NormMode
from rasterlearn.errors import ConfigError
from rasterlearn.io.raster import RasterReader, band_statistics
from rasterlearn.normalize import Normalization

log = logging.getLogger("rasterlearn.embed")


class _WarpedSource:
    """A GDAL warped VRT file (target CRS/resolution) written into the session folder."""

    @staticmethod
    def build(path: str, dst: Path, crs: str | None, resolution: float | None, resampling: str) -> Path:
        import rasterio
        import rasterio.shutil
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import calculate_default_transform

        try:
            rs = Resampling[resampling]
        except KeyError as exc:
            raise ConfigError(
                f"Unknown resampling {resampling!r}; use nearest, bilinear, cubic, average"
            ) from exc
        with rasterio.open(path) as src:
            dst_crs = crs or src.crs
            if dst_crs is None:
                raise ConfigError(f"{path} has no CRS; it cannot be reprojected")
            kw: dict[str, Any] = {}
            if resolution is not None:
                kw["resolution"] = resolution
            transform, width, height = calculate_default_transform(
                src.crs, dst_crs, src.width, src.height, *src.bounds, **kw
            )
            with WarpedVRT(
                src,
                crs=dst_crs,
                transform=transform,
                width=width,
                height=height,
                resampling=rs,
                **_outside_footprint(src),
            ) as vrt:
                rasterio.shutil.copy(vrt, dst, driver="VRT")
        log.info(
            "Reading %s reprojected to %s at %s resolution (%s resampling) through %s",
            path,
            dst_crs,
            resolution or "native",
            resampling,
            dst,
        )
        return dst


def _outside_footprint(src: Any) -> dict[str, Any]:
    """How the warped VRT marks the pixels outside the source's footprint invalid: its declared nodata; an
    alpha band added by the warper when it declares none (otherwise they read as valid zeros); the source's
    own alpha band, warped with it, when it has one."""
    from rasterio.enums import ColorInterp

    if src.nodata is not None:
        return {"src_nodata": src.nodata, "nodata": src.nodata}
    return {} if ColorInterp.alpha in src.colorinterp else {"add_alpha": True}


def _input_normalization(
    normalization: NormMode, backbone: Backbone, reader: RasterReader, value_scale: float | None
) -> tuple[Normalization, float | None, Any]:
    """The normalization of the tiles, the value scale used and the band statistics to record.

    ``image``: a nodata-aware z-score from the raster's sampled statistics; ``model``: the model's own
    mean/std after dividing by ``value_scale``; ``none``: the values as they are.
    """
    if normalization == "image":
        stats = band_statistics(reader)
        norm = Normalization.from_stats([s.to_dict() for s in stats], "zscore")
        stats_meta: Any = [s.to_dict() for s in stats]
    elif normalization == "model":
        norm, value_scale = _model_normalization(backbone, reader, value_scale)
        stats_meta = None
    else:
        norm, stats_meta = Normalization.identity(reader.count), None
    return norm, value_scale, stats_meta


def _model_normalization(
    backbone: Backbone, reader: RasterReader, value_scale: float | None
) -> tuple[Normalization, float]:
    dtype = np.dtype(reader.dtype)
    if value_scale is None:
        value_scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        log.info(
            "Model normalization: input %s values divided by %g before the model's mean/std "
            "(set value_scale to change)",
            dtype,
            value_scale,
        )
    n = reader.count
    mean, std = backbone.mean, backbone.std
    if n == len(mean):
        m, s = mean, std
    elif n == 1:
        m, s = (float(np.mean(mean)),), (float(np.mean(std)),)
    else:
        m = tuple(mean[i % len(mean)] for i in range(n))
        s = tuple(std[i % len(std)] for i in range(n))
        log.info("Model mean/std has %d values for %d bands: repeated cyclically", len(mean), n)
    return Normalization(
        "zscore", tuple(v * value_scale for v in m), tuple(v * value_scale for v in s)
    ), value_scale
