"""The analyze stage: class proportions, filter counts, threshold search, files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from shapely.geometry import box

from rasterlearn.analysis import analyze_dataset, balance_score, class_proportions, threshold_search
from rasterlearn.chips import Scene, make_chips
from rasterlearn.errors import InputNotFoundError
from rasterlearn.labels import ClassSchema
from tests.conftest import write_tif

SCHEMA = ClassSchema.infer([1, 2])


def table(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    """Candidates of 10 x 10 px: (px_0, px_1, px_2, nodata_fraction); everything labelled."""
    out = []
    for i, (a, b, c, nd) in enumerate(rows):
        total = 100
        out.append(
            {
                "scene": "s",
                "split": "trn" if i % 2 == 0 else "val",
                "row_off": 0,
                "col_off": 10 * i,
                "height": 10,
                "width": 10,
                "px_0": a,
                "px_1": b,
                "px_2": c,
                "px_ignore": total - a - b - c,
                "nodata_fraction": nd,
                "labelled_fraction": (a + b + c) / total,
                "annotated_fraction": (b + c) / total,
                "reason": "",
            }
        )
    return pd.DataFrame(out)


def test_balance_score() -> None:
    assert balance_score(np.array([5, 5, 5])) == pytest.approx(1.0)
    assert balance_score(np.array([10, 0, 0])) == 0.0
    assert 0 < balance_score(np.array([90, 5, 5])) < 0.6


def test_class_proportions_per_split() -> None:
    t = table([(100, 0, 0, 0.0), (50, 50, 0, 0.0), (0, 0, 100, 0.0)])
    p = class_proportions(t, SCHEMA, "split")
    trn = p[p["group"] == "trn"].set_index("code")["proportion"]
    assert trn[0] == pytest.approx(0.5) and trn[2] == pytest.approx(0.5) and trn[1] == 0
    val = p[p["group"] == "val"].set_index("code")
    assert val.loc[1, "pixels"] == 50 and val.loc[1, "chips"] == 1


def test_threshold_search_prefers_balanced_setting() -> None:
    # many background-only chips and a few with rare classes: min_annotated removes the background chips
    t = table([(100, 0, 0, 0.0)] * 20 + [(40, 30, 30, 0.0)] * 5 + [(100, 0, 0, 1.0)])
    res = threshold_search(t, SCHEMA, annotated=(0, 10, 50), proportion=(0, 20), min_keep=0.1)
    best = res.iloc[0]
    assert best["eligible"] and best["chips"] == 5  # background-only chips removed
    assert best["min_annotated"] >= 10 or best["class_proportion"] == 20
    assert best["balance"] == pytest.approx(balance_score(np.array([200, 150, 150])))
    none = res[(res["min_annotated"] == 0) & (res["class_proportion"] == 0)].iloc[0]
    assert none["chips"] == 25  # the all-nodata chip is never in the pool
    strict = threshold_search(t, SCHEMA, annotated=(0, 10), proportion=(0,), min_keep=0.5)
    assert not strict[strict["min_annotated"] == 10]["eligible"].any()


def test_analyze_dataset_files(tmp_path: Path) -> None:
    x0, y0 = 500_000.0, 4_000_000.0
    img = np.ones((1, 64, 64), dtype="uint8")
    r = write_tif(tmp_path / "s.tif", img, nodata=0, transform=Affine(10, 0, x0, 0, -10, y0))
    gpd.GeoDataFrame(
        {"c": [1, 2]},
        geometry=[box(x0, y0 - 100, x0 + 100, y0), box(x0 + 400, y0 - 600, x0 + 640, y0 - 400)],
        crs="EPSG:32633",
    ).to_file(tmp_path / "v.gpkg")
    res = make_chips(
        [Scene(r, tmp_path / "v.gpkg")],
        tmp_path / "ds",
        size=16,
        attribute="c",
        split_method="random",
        val=0.25,
    )
    with pytest.raises(InputNotFoundError, match=r"no dataset\.json"):
        analyze_dataset(tmp_path)
    a = analyze_dataset(res.out)
    for key in ("proportions", "filters", "thresholds", "plot"):
        assert a.files[key].exists() and a.files[key].stat().st_size > 0
    allp = a.proportions[a.proportions["group_by"] == "all"].set_index("code")
    assert allp.loc[1, "pixels"] == 100 and allp.loc[2, "pixels"] == 24 * 20
    assert allp["pixels"].sum() == 16 * 16 * len(res.manifest)
    f = a.filters.set_index("filter")
    assert f.loc["kept", "dropped_first"] == len(res.manifest) and f.loc["candidates", "dropped_first"] == 16
    assert a.best is not None and a.best["eligible"]
    saved = pd.read_csv(a.files["thresholds"])
    assert len(saved) == len(a.thresholds) and {"min_annotated", "class_proportion", "balance"} <= set(
        saved.columns
    )
