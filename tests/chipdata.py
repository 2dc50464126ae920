"""Test helper: write a tiny chip folder in the ``rasterlearn-chips/1`` format (dataset_spec).

The images are learnable: class ``k`` pixels get band values around ``base + 400 * k`` (uint16, never 8-bit
scaled), so a tiny model separates the classes in a few epochs. Some pixels are nodata (image nodata and
mask ignore), some are unlabelled (mask ignore only).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.normalize import Normalization


def write_chip_dataset(
    root: Path,
    *,
    n_per_split: tuple[int, int, int] = (8, 4, 4),
    size: int = 32,
    bands: int = 3,
    codes: tuple[int, ...] = (0, 1),
    dtype: str = "uint16",
    nodata: float | None = 0,
    seed: int = 0,
    band_names: list[str] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    schema = ClassSchema(
        tuple(
            ClassInfo(
                c,
                "background" if c == 0 else f"class_{c}",
                "#000000"
                if c == 0
                else ["#e31a1c", "#1f78b4", "#33a02c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3"][
                    (c - 1) % 7
                ],
            )
            for c in codes
        )
    )
    names = band_names or [f"band_{i + 1}" for i in range(bands)]
    rows = []
    all_vals = []
    chip = 0
    for split, n in zip(("trn", "val", "tst"), n_per_split, strict=True):
        for _ in range(n):
            r0, c0 = chip * size, 0
            chip_id = f"scene_r{r0:06d}_c{c0:06d}"
            chip += 1
            # blocky class layout
            blocks = rng.integers(0, len(codes), size=(4, 4))
            idx = np.kron(blocks, np.ones((size // 4, size // 4), dtype=int))
            mask = np.asarray(codes, dtype="uint8")[idx]
            img = np.empty((bands, size, size), dtype="float64")
            for b in range(bands):
                img[b] = 1000 + 100 * b + 400 * idx + rng.normal(0, 60, (size, size))
            img = img.astype(dtype)
            valid = np.ones((size, size), bool)
            if nodata is not None:
                valid[: size // 8, : size // 8] = False
                img[:, ~valid] = nodata
                mask[~valid] = schema.ignore_index
            mask[-1, :] = schema.ignore_index  # unlabelled row
            transform = Affine(10.0, 0, 500_000 + c0 * 10.0, 0, -10.0, 4_000_000 - r0 * 10.0)
            prof = {
                "driver": "GTiff",
                "width": size,
                "height": size,
                "crs": "EPSG:32633",
                "transform": transform,
            }
            with rasterio.open(
                root / "images" / f"{chip_id}.tif", "w", count=bands, dtype=dtype, nodata=nodata, **prof
            ) as ds:
                ds.write(img)
                for i, nm in enumerate(names, 1):
                    ds.set_band_description(i, nm)
            with rasterio.open(
                root / "masks" / f"{chip_id}.tif",
                "w",
                count=1,
                dtype="uint8",
                nodata=schema.ignore_index,
                **prof,
            ) as ds:
                ds.write(mask[np.newaxis])
            if split == "trn":
                all_vals.append(img[:, valid].astype("float64"))
            row = {
                "chip_id": chip_id,
                "image": f"images/{chip_id}.tif",
                "mask": f"masks/{chip_id}.tif",
                "scene": "scene",
                "split": split,
                "row_off": r0,
                "col_off": c0,
                "height": size,
                "width": size,
                "minx": transform.c,
                "miny": transform.f - 10 * size,
                "maxx": transform.c + 10 * size,
                "maxy": transform.f,
                "nodata_fraction": float((~valid).mean()),
                "annotated_fraction": float((mask != schema.ignore_index).mean()),
            }
            for code in codes:
                row[f"px_{code}"] = int((mask == code).sum())
            rows.append(row)
    vals = np.concatenate(all_vals, axis=1)
    stats = [
        {
            "band": names[b],
            "count": int(vals.shape[1]),
            "mean": float(vals[b].mean()),
            "std": float(vals[b].std()),
            "min": float(vals[b].min()),
            "max": float(vals[b].max()),
            "p2": float(np.percentile(vals[b], 2)),
            "p98": float(np.percentile(vals[b], 98)),
        }
        for b in range(bands)
    ]
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {
        "format": "rasterlearn-chips/1",
        "params": {"size": size},
        "params_hash": "test",
        "chip_size": size,
        "stride": size,
        "bands": names,
        "band_indexes": list(range(1, bands + 1)),
        "dtype": dtype,
        "nodata": nodata,
        "schema": schema.to_dict(),
        "statistics": stats,
        "normalization": Normalization.from_stats(stats, "zscore").to_dict(),
        "crs": "EPSG:32633",
        "epsg": 32633,
        "resolution": [10.0, 10.0],
        "crs_units": "metre",
        "scenes": [{"id": "scene", "image": "scene.tif", "labels": "labels.gpkg", "attribute": "class"}],
        "splits": dict(zip(("trn", "val", "tst"), n_per_split, strict=True)),
        "split_method": "test",
        "dropped": {},
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
