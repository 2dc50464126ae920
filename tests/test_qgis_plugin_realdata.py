"""Every QGIS plugin algorithm through processing.run on the real sample data (``../shared/data``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.qgis_helpers import (
    drive,
    install_plugin,
    needs_qgis,
)

pytestmark = needs_qgis


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("profile"))


@pytest.mark.slow
@pytest.mark.realdata
def test_cluster_and_similarity_on_shared_data(plugins_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    """NAIP clustering (4 bands, nodata 0) and Sentinel-2 similarity to references in EPSG:4326."""
    naip = shared_data / "naip_nd" / "naip_2019_rgbn.tif"
    s2 = shared_data / "cameroon_s2" / "s2_11band.tif"
    refs = shared_data / "cameroon_s2" / "reference_points.shp"
    cl, sim = str(tmp_path / "naip_clusters.tif"), str(tmp_path / "s2_sim.tif")
    steps = [
        {"op": "run", "alg": "rasterlearn:cluster", "params": {"INPUT": str(naip), "CLUSTERS": 5, "OUTPUT": cl}},
        {"op": "raster_style", "path": cl},
        {"op": "run", "alg": "rasterlearn:similarity", "params": {"INPUT": str(s2), "REFERENCES": str(refs), "OUTPUT": sim}},
        {"op": "raster_style", "path": sim},
        {"op": "run", "alg": "rasterlearn:classify", "params": {"INPUT": str(s2), "LABELS": str(refs), "ATTRIBUTE": "id", "OUTPUT": str(tmp_path / "x.tif")}},
    ]  # fmt: skip
    r_cl, cl_style, r_sim, sim_style, bad = drive(plugins_dir, steps, tmp_path)
    assert r_cl["ok"] and r_sim["ok"], (r_cl.get("error"), r_sim.get("error"))
    assert cl_style["renderer"] == "paletted" and [c[0] for c in cl_style["classes"]] == [1, 2, 3, 4, 5]
    with rasterio.open(naip) as src, rasterio.open(cl) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert ((out.read(1) == 0) == (src.read_masks(1) == 0)).all()  # nodata stays nodata (0)
    assert sim_style["renderer"] == "singlebandpseudocolor" and (sim_style["min"], sim_style["max"]) == (
        0.0,
        1.0,
    )
    # the reference points' 'id' is all null: the CLI's one-line error, not a traceback
    assert not bad["ok"] and "Traceback" not in bad["error"] and "id" in bad["error"], bad["error"]


def _extent(path: Path, dx0: float, dy0: float, size: float) -> tuple[str, tuple[float, ...]]:
    """A QGIS extent string of a ``size`` square whose lower left is (dx0, dy0) from the raster's lower left."""
    with rasterio.open(path) as ds:
        left, bottom, epsg = ds.bounds.left + dx0, ds.bounds.bottom + dy0, ds.crs.to_epsg()
    box_ = (left, bottom, left + size, bottom + size)
    return f"{box_[0]},{box_[2]},{box_[1]},{box_[3]} [EPSG:{epsg}]", box_


LANDCLASS_NAMES = "1=developed,2=agriculture,3=herbaceous,4=shrubland,5=forest,6=water,7=sediment"


@pytest.mark.slow
@pytest.mark.realdata
def test_every_other_algorithm_on_shared_data(plugins_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    """info, embed, reduce, classify, evaluate (raster and vector truth), vectorize, chips, analyze, train and
    predict through processing.run on ../shared/data (kept small: extents, 128 px chips, one epoch); outputs
    load as valid styled layers with the classes' names and colours; two bad inputs give the CLI's message."""
    naip14 = shared_data / "naip_nd" / "naip_2014_rgbn.tif"
    naip19 = shared_data / "naip_nd" / "naip_2019_rgbn.tif"
    s2 = shared_data / "cameroon_s2" / "s2_11band.tif"
    lc = shared_data / "landcover_nc"
    bm = shared_data / "buildings_ma"
    scene2 = bm / "scene_23429155_uint16.tif"
    t = {
        k: str(tmp_path / v)
        for k, v in dict(
            feat="naip_feat.tif", pca="naip_pca.tif", cls="lc_map.tif", met="lc_cv.json", ev="lc_eval.json",
            poly="lc_polygons.gpkg", chips="chips", an="analysis", model="model", map="b_map.tif",
            prob="b_prob.tif", bpoly="b_polygons.gpkg", bev="b_eval.json",
        ).items()
    }  # fmt: skip
    emb_extent, _ = _extent(naip19, 1000, 1000, 640)  # 128 x 128 px of 5 m
    pr_extent, pr_box = _extent(scene2, 300, 200, 384)  # 384 x 384 px of 1 m
    steps = [
        {"op": "run", "alg": "rasterlearn:info", "params": {"INPUT": str(s2)}},
        {"op": "run", "alg": "rasterlearn:embed", "params": {"INPUT": str(naip19), "MODEL": "resnet18", "SIZE": 32, "NO_PRETRAINED": True, "EXTENT": emb_extent, "OUTPUT": t["feat"]}},
        {"op": "raster_style", "path": t["feat"]},
        {"op": "run", "alg": "rasterlearn:reduce", "params": {"INPUT": str(naip14), "COMPONENTS": 3, "SAMPLE_SIZE": 20000, "OUTPUT": t["pca"]}},
        {"op": "raster_style", "path": t["pca"]},
        {"op": "run", "alg": "rasterlearn:classify", "params": {"INPUT": str(lc / "landsat7_5band.tif"), "LABELS": str(lc / "training_points.shp"), "ATTRIBUTE": "label", "FOLDS": 2, "OUTPUT": t["cls"], "METRICS": t["met"]}},
        {"op": "raster_style", "path": t["cls"]},
        {"op": "run", "alg": "rasterlearn:evaluate", "params": {"INPUT": t["cls"], "TRUTH_RASTER": str(lc / "landclass_7.tif"), "TRUTH_NAMES": LANDCLASS_NAMES, "CLASS_MATCH": 1, "OUTPUT": t["ev"]}},
        {"op": "run", "alg": "rasterlearn:vectorize", "params": {"INPUT": t["cls"], "MIN_AREA": 50000, "OUTPUT": t["poly"]}},
        {"op": "vector_style", "path": t["poly"]},
        {"op": "run", "alg": "rasterlearn:chips", "params": {"INPUT": str(bm / "scene_22978945.tif"), "LABELS": str(bm / "buildings.gpkg"), "SIZE": 128, "SPLIT": 1, "VAL": 0.25, "TEST": 0.0, "OUTPUT": t["chips"]}},
        {"op": "run", "alg": "rasterlearn:analyze", "params": {"DATASET": t["chips"], "OUTPUT": t["an"]}},
        {"op": "run", "alg": "rasterlearn:train", "params": {"DATASET": t["chips"], "ENCODER": "tu-mobilenetv3_small_050", "EPOCHS": 1, "BATCH_SIZE": 8, "OUTPUT": t["model"]}},
        {"op": "run", "alg": "rasterlearn:predict", "params": {"MODEL": t["model"], "INPUT": str(scene2), "EXTENT": pr_extent, "OUTPUT": t["map"], "PROBABILITIES": t["prob"], "POLYGONS": t["bpoly"]}},
        {"op": "raster_style", "path": t["map"]},
        {"op": "raster_style", "path": t["prob"]},
        {"op": "vector_style", "path": t["bpoly"]},
        {"op": "run", "alg": "rasterlearn:evaluate", "params": {"INPUT": t["map"], "TRUTH": str(bm / "buildings.gpkg"), "ATTRIBUTE": "class", "EXTENT": pr_extent, "OUTPUT": t["bev"]}},
        {"op": "run", "alg": "rasterlearn:classify", "params": {"INPUT": str(lc / "landsat7_5band.tif"), "LABELS": str(lc / "training_points.shp"), "ATTRIBUTE": "nosuch", "OUTPUT": str(tmp_path / "x.tif")}},
        {"op": "run", "alg": "rasterlearn:similarity", "params": {"INPUT": str(naip19), "REFERENCES": str(shared_data / "cameroon_s2" / "reference_points.shp"), "OUTPUT": str(tmp_path / "y.tif")}},
    ]  # fmt: skip
    (info, emb, emb_style, red, red_style, cls, cls_style, ev, vec, vec_style, chips, an, train, pr, map_style,
     prob_style, bpoly_style, bev, no_attr, no_overlap) = drive(plugins_dir, steps, tmp_path, timeout=1500)  # fmt: skip
    for r in (info, emb, red, cls, ev, vec, chips, an, train, pr, bev):
        assert r["ok"], r.get("error")
    for r in (emb, red, cls, ev, vec, chips, an, train, pr, bev):
        assert r["progress"] and r["progress"][-1] == 100.0
    # info: the 11-band Sentinel-2 subset
    assert (info["results"]["WIDTH"], info["results"]["HEIGHT"], info["results"]["BANDS"]) == (968, 379, 11)
    assert info["results"]["CRS"] == "EPSG:32633"
    # embed over the 640 m extent only: 4 x 4 feature pixels, RGB of bands 1-3
    with rasterio.open(t["feat"]) as ds:
        assert (ds.count, ds.width, ds.height, ds.crs.to_epsg()) == (512, 4, 4, 26914)
    assert emb_style["valid"] and emb_style["renderer"] == "multibandcolor" and emb_style["rgb"] == [1, 2, 3]
    # reduce: 3 components on NAIP's grid, RGB
    with rasterio.open(naip14) as src, rasterio.open(t["pca"]) as ds:
        assert ds.count == 3 and ds.transform == src.transform and ds.crs == src.crs
    assert red_style["renderer"] == "multibandcolor" and red_style["rgb"] == [1, 2, 3]
    # classify: paletted with the label names and the map's own colour table; spatial CV metrics written
    names = {"developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"}
    assert cls_style["renderer"] == "paletted" and {c[1] for c in cls_style["classes"]} == names
    with rasterio.open(t["cls"]) as ds:
        cmap = ds.colormap(1)
    for code, _name, colour in cls_style["classes"]:
        assert colour == "#{:02x}{:02x}{:02x}".format(*cmap[code][:3])
    assert Path(t["met"]).exists()
    # evaluate against the dense 1996 land-class raster, classes matched by name
    assert ev["results"]["OVERALL_ACCURACY"] > 0.4 and ev["results"]["KAPPA"] > 0.2, ev["results"]
    # vectorize: categorized by class_code with the map's names and colours
    assert vec_style["valid"] and vec_style["renderer"] == "categorizedSymbol" and vec_style["count"] > 0
    by_code = {c[0]: (c[1], c[2]) for c in cls_style["classes"]}
    for value, label, colour in vec_style["categories"]:
        assert (label, colour) == by_code[int(value)]
    # chips -> analyze -> train -> predict on the other scene (uint16), inside the extent only
    assert (Path(t["chips"]) / "dataset.json").exists() and any(Path(t["an"]).iterdir())
    assert (Path(t["model"]) / "model.json").exists()
    assert map_style["renderer"] == "paletted" and len(map_style["classes"]) >= 2
    with rasterio.open(t["map"]) as ds:
        mask = ds.read_masks(1) > 0
        rows, cols = np.nonzero(mask)
        x0, y0 = ds.xy(rows.min(), cols.min(), offset="ul")
        x1, y1 = ds.xy(rows.max(), cols.max(), offset="lr")
    assert pr_box[0] - 1 <= x0 and x1 <= pr_box[2] + 1 and pr_box[1] - 1 <= y1 and y0 <= pr_box[3] + 1
    assert 350**2 <= mask.sum() <= 386**2  # only the extent was mapped
    assert prob_style["renderer"] == "singlebandpseudocolor" and (prob_style["min"], prob_style["max"]) == (
        0.0,
        1.0,
    )
    assert bpoly_style["renderer"] == "categorizedSymbol"
    pal = {c[0]: (c[1], c[2]) for c in map_style["classes"]}
    for value, label, colour in bpoly_style["categories"]:
        assert (label, colour) == pal[int(value)]
    assert 350**2 <= json.loads(Path(t["bev"]).read_text())["pixels"] <= 386**2
    # bad inputs: the CLI's one-line messages
    assert not no_attr["ok"] and "nosuch" in no_attr["error"] and "label" in no_attr["error"], no_attr
    assert not no_overlap["ok"] and "overlap" in no_overlap["error"].lower(), no_overlap
    for r in (no_attr, no_overlap):
        assert "Traceback" not in r["error"]
