"""The dataset folder: chip GeoTIFFs and tables written atomically, chip ids, the parameters file and the
choice of the folder to write (resume, overwrite or a sibling ``DIR-<hash>``)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rasterlearn._util import atomic_write, file_identity
from rasterlearn.chips.options import Compression
from rasterlearn.errors import OutputError
from rasterlearn.labels import ClassSchema

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


def _write_tif(
    path: Path,
    data: np.ndarray,
    *,
    transform: Any,
    crs: Any,
    nodata: float | None,
    descriptions: Sequence[str] | None = None,
    colormap: Mapping[int, Any] | None = None,
    compress: Compression = "deflate",
    valid: np.ndarray | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write a small GeoTIFF under a temporary name, then rename it into place (atomic)."""
    import rasterio

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if compress != "none":
        profile["compress"] = compress
    if data.shape[0] > 1:
        profile["interleave"] = "pixel" if data.shape[0] <= 4 else "band"

    def write(tmp: Path) -> None:
        with rasterio.Env(GDAL_TIF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as ds:
            if colormap:
                ds.write_colormap(
                    1, colormap
                )  # before the data: the palette photometric tag is set at creation
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    ds.set_band_description(i, d)
            if tags:
                ds.update_tags(**tags)
            ds.write(data)
            if valid is not None:
                ds.write_mask(np.where(valid, 255, 0).astype("uint8"))

    atomic_write(path, write)


def _colormap(schema: ClassSchema) -> dict[int, tuple[int, int, int, int]]:
    from rasterlearn.io.writer import hex_to_rgba

    cmap = {c.code: hex_to_rgba(c.color) for c in schema.classes}
    cmap[schema.ignore_index] = (0, 0, 0, 0)
    return cmap


def _file_identity(p: Path | None) -> dict[str, Any] | None:
    return None if p is None else file_identity(p)


def _atomic_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


_PARAMS_FILE = ".chips.params.json"
_OWNED = (
    "images",
    "masks",
    "manifest.csv",
    "candidates.csv",
    "dataset.json",
    ".scan",
    _PARAMS_FILE,
    "analysis",
)


def _chip_id(scene: str, row_off: int, col_off: int) -> str:
    return f"{scene}_r{int(row_off):06d}_c{int(col_off):06d}"


def _resolve_out(out: Path, params_hash: str, overwrite: bool) -> Path:
    """The folder to write: ``out`` when new/empty/same parameters; else a sibling ``out-<hash>``."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return out
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --output")
    existing = _existing_hash(out)
    if existing is None:
        raise OutputError(
            f"{out} exists, is not empty and is not a rasterlearn chip dataset; choose another --output "
            f"(nothing was written)"
        )
    if overwrite:
        log.warning("Overwriting the chip dataset in %s", out)
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return out
    if existing == params_hash:
        log.info("Resuming the chip dataset in %s (same parameters)", out)
        return out
    alt = out.with_name(f"{out.name}-{params_hash[:8]}")
    log.warning(
        "%s holds a chip dataset made with other parameters (%s); writing this one (%s) to %s instead. "
        "Pass overwrite=True (CLI: --overwrite) to replace it.",
        out,
        existing,
        params_hash,
        alt,
    )
    if alt.exists() and _existing_hash(alt) not in (
        None,
        params_hash,
    ):  # pragma: no cover - hash prefix clash
        raise OutputError(f"{alt} exists with other parameters; remove it or choose another --output")
    return alt


def _existing_hash(out: Path) -> str | None:
    for name in (_PARAMS_FILE, "dataset.json"):
        p = out / name
        if p.exists():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                return str(json.loads(p.read_text(encoding="utf-8")).get("params_hash"))
    return None
