"""Shared set-up of the predict benchmarks: a generated raster and a model package."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_raster(
    path: Path, size: int, bands: int = 4, block: int = 512, seed: int = 0, height: int | None = None
) -> Path:
    """A tiled, DEFLATE-compressed uint8 raster with smooth structure (written block by block)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    prof = {
        "driver": "GTiff",
        "width": size,
        "height": height or size,
        "count": bands,
        "dtype": "uint8",
        "crs": "EPSG:32618",
        "transform": Affine(1.0, 0, 300_000.0, 0, -1.0, 5_000_000.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", **prof) as ds:
        n_rows = height or size
        for r in range(0, n_rows, block):
            for c in range(0, size, block):
                h, w = min(block, n_rows - r), min(block, size - c)
                rows, cols = np.mgrid[r : r + h, c : c + w]
                base = 100 + 60 * np.sin(rows / 37.0) * np.cos(cols / 53.0)
                data = np.stack([base + 20 * k + rng.normal(0, 8, (h, w)) for k in range(bands)])
                ds.write(np.clip(data, 1, 255).astype("uint8"), window=Window(c, r, w, h))
    tmp.rename(path)
    return path


def make_package(
    folder: Path,
    bands: int = 4,
    classes: int = 2,
    chip: int = 256,
    arch: str = "unet",
    encoder: str = "resnet18",
) -> Path:
    """A randomly initialised smp model saved as a rasterlearn model package."""
    import torch

    from rasterlearn.labels import ClassInfo, ClassSchema
    from rasterlearn.models import ModelMetadata, create_model, save_package
    from rasterlearn.normalize import Normalization

    if (folder / "model.json").exists():
        return folder
    torch.manual_seed(0)
    model = create_model(arch, encoder, in_channels=bands, classes=classes)
    schema = ClassSchema(tuple(ClassInfo(c, f"class_{c}", "#808080") for c in range(classes)))
    meta = ModelMetadata(
        arch=arch,
        encoder=encoder,
        in_channels=bands,
        num_classes=classes,
        bands=[f"band_{i + 1}" for i in range(bands)],
        band_indexes=list(range(1, bands + 1)),
        normalization=Normalization("zscore", (120.0,) * bands, (40.0,) * bands).to_dict(),
        schema=schema.to_dict(),
        chip_size=chip,
    )
    return save_package(model, meta, folder)
