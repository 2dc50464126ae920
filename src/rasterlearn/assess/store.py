"""Sample files: the points and their design written together (atomically), and read back.

A GeoPackage holds layer ``samples`` and the non-spatial tables ``design`` (one row: the design as JSON)
and ``strata`` (one row per stratum); formats without tables get ``NAME.design.json`` beside them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write, atomic_write_json, json_default
from rasterlearn.errors import InputError
from rasterlearn.grid import Grid
from rasterlearn.labels import ClassSchema

__all__ = ["DESIGN_LAYER", "SAMPLES_LAYER", "STRATA_LAYER", "design_sidecar", "read_design", "write_sample"]

SAMPLES_LAYER, DESIGN_LAYER, STRATA_LAYER = "samples", "design", "strata"
_TABLE_FORMATS = {".gpkg"}


def points_frame(
    grid: Grid,
    rows: np.ndarray,
    cols: np.ndarray,
    mcodes: np.ndarray,
    scodes: np.ndarray,
    schema: ClassSchema,
    record: dict[str, Any],
    reference_field: str,
) -> Any:
    import geopandas as gpd
    import pandas as pd

    order = np.lexsort((cols, rows))
    rows, cols = rows[order].astype("int64"), cols[order].astype("int64")
    mcodes, scodes = mcodes[order].astype("int64"), scodes[order].astype("int64")
    t = grid.transform
    x = t.a * (cols + 0.5) + t.b * (rows + 0.5) + t.c
    y = t.d * (cols + 0.5) + t.e * (rows + 0.5) + t.f
    prob = {s["code"]: s["inclusion_probability"] for s in record["strata"]}
    sname = {s["code"]: s["name"] for s in record["strata"]}
    frame = {
        "id": np.arange(1, rows.size + 1),
        "map_code": mcodes,
        "map_class": [schema.name_of(int(c)) for c in mcodes],
        "stratum": scodes,
        "stratum_name": [sname.get(int(s), str(s)) for s in scodes],
        "incl_prob": [prob[int(s)] for s in scodes],
        "row": rows,
        "col": cols,
        reference_field: pd.Series([None] * rows.size, dtype="string"),
    }
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs=grid.crs)


def write_sample(gdf: Any, output: Path, record: dict[str, Any]) -> None:
    """Write the points and their design (GeoPackage tables, else a JSON sidecar), atomically."""
    import pandas as pd
    import pyogrio

    text = json.dumps(record, default=json_default)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() in _TABLE_FORMATS:

        def write(tmp: Path) -> None:
            gdf.to_file(tmp, driver="GPKG", layer=SAMPLES_LAYER, engine="pyogrio")
            pyogrio.write_dataframe(
                pd.DataFrame({"key": ["design"], "json": [text]}), tmp, layer=DESIGN_LAYER, driver="GPKG"
            )
            pyogrio.write_dataframe(
                pd.DataFrame([{k: v for k, v in s.items()} for s in record["strata"]]),
                tmp,
                layer=STRATA_LAYER,
                driver="GPKG",
            )

        atomic_write(output, write, suffix=".gpkg")
    else:
        from rasterlearn.io.vector import write_vector

        write_vector(gdf, output)
        atomic_write_json(design_sidecar(output), record, default=json_default)


def design_sidecar(path: str | Path) -> Path:
    """``NAME.design.json`` beside a sample file (formats that cannot hold a design table)."""
    p = Path(path)
    return p.with_name(f"{p.name}.design.json")


def read_design(
    samples: str | Path, design: str | Path | Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The design stored with a sample (GeoPackage ``design`` table or ``NAME.design.json``), or the one
    given; ``None`` for a plain point layer."""
    if isinstance(design, Mapping):
        return dict(design)
    if design is not None:
        try:
            return dict(json.loads(Path(design).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read the sample design {design}: {exc}") from exc
    samples = Path(samples)
    side = design_sidecar(samples)
    if side.exists():
        return read_design(samples, side)
    if samples.suffix.lower() == ".gpkg":
        import pyogrio

        if DESIGN_LAYER in [str(n) for n, _ in pyogrio.list_layers(samples)]:
            table = pyogrio.read_dataframe(samples, layer=DESIGN_LAYER)
            try:
                return dict(json.loads(str(table["json"].iloc[0])))
            except (KeyError, IndexError, ValueError) as exc:
                raise InputError(
                    f"The design table of {samples} is unreadable ({exc}); it was not written by rasterlearn sample"
                ) from exc
    return None
