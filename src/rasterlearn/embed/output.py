"""The output of :func:`rasterlearn.embed.embed`: the features' tags, their writer, and the final file.

Features are written as float32 by :class:`rasterlearn.io.writer.BlockWriter` into the session folder (the
strips it commits are the resumable state); ``float16`` and ``uint16`` storage are a second pass over them
(:func:`_convert_storage`), and the result is moved to the output the caller named.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import disk_full_error, is_disk_full, move_file
from rasterlearn.embed.backbones import Backbone
from rasterlearn.embed.layout import FeatureLayout, FeaturePlan
from rasterlearn.embed.request import EmbedRequest, Storage
from rasterlearn.errors import OutputError
from rasterlearn.grid import Window
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.writer import BlockWriter
from rasterlearn.normalize import Normalization

log = logging.getLogger("rasterlearn.embed")


def _feature_tags(
    req: EmbedRequest,
    sid: str,
    digest: str,
    random_weights: bool,
    backbone: Backbone,
    lay: FeatureLayout,
    norm: Normalization,
    value_scale: float | None,
    stats_meta: Any,
    in_names: list[str],
) -> dict[str, Any]:
    """The provenance the features carry: session, network and weights, tiling, normalization, input."""
    checkpoint, provenance = req.checkpoint, req.provenance
    target_crs, resolution, resampling = req.target_crs, req.resolution, req.resampling
    return {
        "rasterlearn_stage": "embed",
        "rasterlearn_session": sid,
        "rasterlearn_model": req.model,
        "rasterlearn_checkpoint": "" if checkpoint is None else str(Path(checkpoint).resolve()),
        "rasterlearn_weights_sha256": digest,
        "rasterlearn_random_weights": random_weights,
        "rasterlearn_seed": req.seed if random_weights else None,
        "rasterlearn_layer": backbone.layer,
        "rasterlearn_family": backbone.family,
        "rasterlearn_tile_size": req.size,
        "rasterlearn_tile_stride": req.stride,
        "rasterlearn_input_size": lay.input_size,
        "rasterlearn_effective_stride": lay.factor,
        "rasterlearn_merge": req.merge,
        "rasterlearn_normalization": {
            "mode": req.normalization,
            "value_scale": value_scale,
            **norm.to_dict(),
        },
        "rasterlearn_band_statistics": stats_meta,
        "rasterlearn_input": str(req.raster.resolve()),
        "rasterlearn_input_bands": in_names,
        "rasterlearn_min_valid_fraction": req.min_valid_fraction,
        "rasterlearn_reprojected": {"crs": target_crs, "resolution": resolution, "resampling": resampling}
        if req.reprojected
        else None,
        **(dict(provenance) if provenance else {}),
    }


def _open_writer(
    req: EmbedRequest, session: Path, sid: str, plan: FeaturePlan, dim: int, tags: dict[str, Any]
) -> BlockWriter:
    """The float32 feature writer in the session folder, resuming the strips a killed run committed."""
    storage = req.storage
    names = [f"feature_{k:03d}" for k in range(dim)]
    float_path = session / ("features.tif" if storage == "float32" else "features_float32.tif")
    return BlockWriter(
        float_path,
        plan.grid,
        dim,
        "float32",
        nodata=float("nan"),
        band_descriptions=names,
        tags=tags,
        blocksize=plan.blocksize,
        overviews=storage == "float32",
        resume=req.resume,
        # strips (and stripes) are the resume keys: another height or stripe width is another job
        fingerprint=f"{sid}:strip{plan.blocksize}"
        + (f":stripe{plan.stripe_width}" if len(plan.stripes) > 1 else ""),
    )


def _finish_output(produced: Path, final: Path, storage: Storage, overwrite: bool) -> None:
    """Turn the float32 features the writer ``produced`` into ``final``: converted to ``storage``, or moved."""
    if storage != "float32":
        try:
            _convert_storage(produced, final, storage)
        except Exception as exc:
            for tmp in final.parent.glob(f".{final.name}.*tmp*"):
                tmp.unlink(missing_ok=True)
            if is_disk_full(exc, final):
                raise disk_full_error(final) from exc
            raise
        produced.unlink()
    elif produced != final:
        if final.exists() and not overwrite:
            raise OutputError(f"{final} exists; pass overwrite=True (CLI: --overwrite)")
        move_file(produced, final)  # across file systems: a temporary copy beside final, then a rename


def _convert_storage(src: Path, dst: Path, storage: Storage) -> None:
    """Second pass over the float32 features: ``uint16`` with per-band scale/offset, or half floats."""
    import rasterio
    import rasterio.shutil

    with RasterReader(src) as rd:
        grid, count = rd.grid, rd.count
        ds = rd.dataset
        tags = ds.tags()
        names = list(ds.descriptions)
        bs = ds.block_shapes[0][0]
        windows = [
            Window(r, c, min(bs, grid.height - r), min(bs, grid.width - c))
            for r in range(0, grid.height, bs)
            for c in range(0, grid.width, bs)
        ]
        if storage == "float16":
            tmp = dst.with_name(f".{dst.name}.f16.tmp.tif")
            rasterio.shutil.copy(
                ds,
                tmp,
                driver="GTiff",
                NBITS=16,
                TILED="YES",
                BLOCKXSIZE=bs,
                BLOCKYSIZE=bs,
                COMPRESS="ZSTD",
                PREDICTOR=1,
                BIGTIFF="IF_SAFER",
                COPY_SRC_OVERVIEWS="NO",
            )
            os.replace(tmp, dst)
            log.info("Stored %s as half floats (GeoTIFF NBITS=16, read back as float32)", dst)
            return
        lo = np.full(count, np.inf)
        hi = np.full(count, -np.inf)
        for w in windows:
            b = rd.read(w)
            if b.valid.any():
                vals = b.data[:, b.valid]
                lo = np.minimum(lo, vals.min(axis=1))
                hi = np.maximum(hi, vals.max(axis=1))
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 1.0)
        scale = np.where(hi > lo, (hi - lo) / 65534.0, 1.0)
        offset = lo - scale  # code 1 = lo; code 0 is nodata
        tags["rasterlearn_storage"] = "uint16: value = code * scale + offset (per band); code 0 = nodata"
        with BlockWriter(
            dst,
            grid,
            count,
            "uint16",
            nodata=0,
            band_descriptions=names,
            tags=tags,
            scales=scale.tolist(),
            offsets=offset.tolist(),
            blocksize=bs,
        ) as out:
            for win in windows:
                b = rd.read(win)
                code = np.rint((b.data - offset[:, None, None]) / scale[:, None, None])
                code = np.clip(np.nan_to_num(code, nan=0), 1, 65535).astype("uint16")
                code[:, ~b.valid] = 0
                out.write(code, win)
    log.info(
        "Stored %s as uint16 with per-band scale/offset (max error %.3g of each band's range)",
        dst,
        0.5 / 65534,
    )
