"""The QGIS plugin under real (headless) QGIS, calling the real rasterlearn CLI, on small generated data:
every algorithm through processing.run, styled outputs, progress, cancel and resume, bad inputs (helpers and
the driver: ``tests/qgis_helpers.py``, ``tests/qgis_driver.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from tests.qgis_helpers import (
    ALL_IDS,
    drive,
    install_plugin,
    make_image,
    make_region_polygons,
    make_regions,
    needs_qgis,
)

pytestmark = needs_qgis


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("profile"))


def _package(tmp: Path) -> Path:
    import torch

    from rasterlearn.labels import ClassInfo, ClassSchema
    from rasterlearn.models import ModelMetadata, model_spec, save_package, tiny_model
    from rasterlearn.normalize import Normalization

    torch.manual_seed(0)
    spec = model_spec("unet")
    schema = ClassSchema(
        (
            ClassInfo(0, "background", "#000000"),
            ClassInfo(1, "water", "#1e64ff"),
            ClassInfo(2, "forest", "#00a000"),
        )
    )
    meta = ModelMetadata(
        arch="unet",
        encoder=spec.tiny_encoder,
        model_kwargs=dict(spec.tiny_kwargs),
        in_channels=3,
        num_classes=3,
        bands=["b1", "b2", "b3"],
        normalization=Normalization("zscore", (100.0,) * 3, (60.0,) * 3).to_dict(),
        schema=schema.to_dict(),
        chip_size=32,
    )
    return save_package(tiny_model("unet", 3, 3), meta, tmp / "model")


def _cli_polygons_beside_raster_style(tmp: Path) -> Path:
    """A class map with names, colours and its raster style map.qml, vectorized by the CLI to map.gpkg."""
    from rasterlearn.cli import main
    from rasterlearn.io.writer import _qml

    data = np.zeros((1, 32, 32), dtype="uint8")
    data[0, :, 16:] = 2
    data[0, :16, :16] = 1
    path = tmp / "named" / "map.tif"
    path.parent.mkdir()
    colors = {0: (0, 0, 0, 255), 1: (30, 100, 255, 255), 2: (0, 160, 0, 255)}
    with rasterio.open(path, "w", driver="GTiff", height=32, width=32, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10)) as ds:  # fmt: skip
        ds.write(data)
        ds.write_colormap(1, colors)
    names = {0: "background", 1: "water", 2: "forest"}
    path.with_suffix(".qml").write_text(_qml(names, colors, None), encoding="utf-8")
    out = path.with_suffix(".gpkg")
    assert main(["vectorize", str(path), "-o", str(out), "--exclude", "0"]) == 0
    return out


def test_plugin_core_workflows(plugins_dir: Path, tmp_path: Path) -> None:
    """Provider registers every algorithm; cluster, vectorize, info, evaluate (raster truth) run through
    processing.run with the real CLI; outputs load styled; progress reaches 100 %; bad inputs (no overlap, a
    missing attribute) raise QgsProcessingException with the CLI's one-line message."""
    img = make_image(tmp_path / "img.tif")
    truth = make_regions(tmp_path / "truth.tif")
    labels = make_region_polygons(tmp_path / "labels.gpkg")
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[Point(900000, 100000)], crs="EPSG:32633").to_file(far)
    ref = tmp_path / "ref.gpkg"  # one reference point in the red region
    gpd.GeoDataFrame({"id": [1]}, geometry=[Point(500105, 3999705)], crs="EPSG:32633").to_file(ref)
    o = {k: str(tmp_path / v) for k, v in dict(cl="cl.tif", poly="cl.gpkg").items()}
    cli_gpkg = _cli_polygons_beside_raster_style(tmp_path)
    steps = [
        {"op": "algorithms"},
        {"op": "run", "alg": "rasterlearn:cluster", "params": {"INPUT": str(img), "CLUSTERS": 3, "OUTPUT": o["cl"]}},
        {"op": "raster_style", "path": o["cl"]},
        {"op": "run", "alg": "rasterlearn:vectorize", "params": {"INPUT": o["cl"], "OUTPUT": o["poly"]}},
        {"op": "vector_style", "path": o["poly"]},
        {"op": "run", "alg": "rasterlearn:info", "params": {"INPUT": str(img)}},
        {"op": "vector_style", "path": str(cli_gpkg)},
        {"op": "run", "alg": "rasterlearn:similarity", "params": {"INPUT": str(img), "REFERENCES": str(far), "OUTPUT": str(tmp_path / "s.tif")}},
        {"op": "run", "alg": "rasterlearn:evaluate", "params": {"INPUT": o["cl"], "TRUTH_RASTER": str(truth), "CLASS_MATCH": 2, "OUTPUT": str(tmp_path / "ev.json")}},
        {"op": "run", "alg": "rasterlearn:evaluate", "params": {"INPUT": o["cl"], "OUTPUT": str(tmp_path / "ev2.json")}},
        {"op": "run", "alg": "rasterlearn:classify", "params": {"INPUT": str(img), "LABELS": str(labels), "ATTRIBUTE": "klass", "OUTPUT": str(tmp_path / "k.tif")}},
        {"op": "run", "alg": "rasterlearn:similarity", "params": {"INPUT": str(img), "REFERENCES": str(ref), "OUTPUT": str(tmp_path / "sim.tif")}},
        {"op": "raster_style", "path": str(tmp_path / "sim.tif")},
    ]  # fmt: skip
    algs, cl, cl_style, vec, vec_style, info, cli_style, bad, ev, no_truth, no_attr, sim, sim_style = drive(
        plugins_dir, steps, tmp_path
    )
    assert algs == ALL_IDS
    # cluster: paletted map with a legend (names + colours from the CLI's .qml), progress at 100 %
    assert cl["ok"], cl.get("error")
    assert cl["progress"] and cl["progress"][-1] == 100.0
    assert cl_style["valid"] and cl_style["renderer"] == "paletted"
    assert [c[0] for c in cl_style["classes"]] == [1, 2, 3]
    assert all(c[1] == f"cluster {c[0]}" for c in cl_style["classes"])
    # three uniform regions: three clusters, each one region
    with rasterio.open(o["cl"]) as ds:
        m = ds.read(1)
    assert len({m[5, 5], m[5, 60], m[60, 60]}) == 3
    # vectorize: categorized by class_code with the same colours and names, style inside the GeoPackage
    assert vec["ok"], vec.get("error")
    assert (
        vec_style["valid"]
        and vec_style["renderer"] == "categorizedSymbol"
        and vec_style["field"] == "class_code"
    )
    assert [[int(v), lab, col] for v, lab, col in vec_style["categories"]] == cl_style["classes"]
    assert not Path(o["poly"]).with_suffix(".qml").exists() or Path(o["poly"]).stem == Path(o["cl"]).stem
    # info: numbers and JSON
    assert info["ok"] and info["results"]["WIDTH"] == 64 and info["results"]["BANDS"] == 3
    assert info["results"]["CRS"] == "EPSG:32633" and json.loads(info["results"]["JSON"])["epsg"] == 32633
    # the CLI's own vectorize output opens categorized although map.qml (a raster style) sits beside it
    assert cli_style["renderer"] == "categorizedSymbol", cli_style
    assert [[int(v), lab, col] for v, lab, col in cli_style["categories"]] == [
        [1, "water", "#1e64ff"],
        [2, "forest", "#00a000"],
    ]
    # bad input: the CLI's one-line message as a QgsProcessingException
    assert not bad["ok"]
    assert "overlap" in bad["error"].lower() and "Traceback" not in bad["error"], bad["error"]
    assert not (tmp_path / "s.tif").exists()
    # evaluate against a label raster (codes matched by code): the overall accuracy of these very arrays
    assert ev["ok"], ev.get("error")
    with rasterio.open(truth) as ds:
        t = ds.read(1)
    assert ev["results"]["OVERALL_ACCURACY"] == pytest.approx(float((m == t).mean()), abs=1e-9)
    assert json.loads((tmp_path / "ev.json").read_text())["pixels"] == 64 * 64
    # neither truth given: refused before anything runs
    assert not no_truth["ok"] and "exactly one" in no_truth["error"], no_truth
    assert not (tmp_path / "ev2.json").exists()
    # a missing attribute: the CLI's message names it and the ones that exist
    assert not no_attr["ok"] and "Traceback" not in no_attr["error"], no_attr["error"]
    assert "klass" in no_attr["error"] and "class" in no_attr["error"].replace("klass", ""), no_attr["error"]
    assert not (tmp_path / "k.tif").exists()
    # similarity to a red pixel: ~1 over the red region, the cosine of red and green/blue elsewhere
    assert sim["ok"], sim.get("error")
    with rasterio.open(tmp_path / "sim.tif") as ds:
        s = ds.read(1)
    assert s[5:27, 5:27].min() > 0.95 and s[5:27, 37:59].max() < 0.8 and s[37:59, 37:59].max() < 0.8
    assert sim_style["renderer"] == "singlebandpseudocolor" and (sim_style["min"], sim_style["max"]) == (
        0.0,
        1.0,
    )


@pytest.mark.slow
def test_predict_styles_cancel_and_resume(plugins_dir: Path, tmp_path: Path) -> None:
    """Predict with probabilities and polygons (styled); a cancelled run leaves no output and a rerun resumes."""
    img = make_image(tmp_path / "img.tif")
    big = make_image(tmp_path / "big.tif", size=384)
    pkg = _package(tmp_path)
    o = {
        k: str(tmp_path / v)
        for k, v in dict(map="map.tif", prob="prob.tif", mpoly="map.gpkg", big="big_map.tif").items()
    }
    params = {"MODEL": str(pkg), "INPUT": str(big), "OUTPUT": o["big"], "BLOCKSIZE": 32, "BATCH_SIZE": 1}
    steps = [
        {
            "op": "run",
            "alg": "rasterlearn:predict",
            "params": {
                "MODEL": str(pkg),
                "INPUT": str(img),
                "OUTPUT": o["map"],
                "PROBABILITIES": o["prob"],
                "POLYGONS": o["mpoly"],
                "BLOCKSIZE": 32,
            },
        },
        {"op": "raster_style", "path": o["map"]},
        {"op": "raster_style", "path": o["prob"]},
        {"op": "vector_style", "path": o["mpoly"]},
        # cancel once a third is done: predict reports a window row before writing its finished block rows, so
        # a cancel at the very first event may leave no committed block to resume from
        {"op": "run", "alg": "rasterlearn:predict", "params": params, "cancel_at_progress": 30},
        {"op": "exists", "path": o["big"]},
        {"op": "run", "alg": "rasterlearn:predict", "params": params},
    ]
    pr, map_style, prob_style, mpoly_style, cancelled, existed, rerun = drive(plugins_dir, steps, tmp_path)
    # predict: map paletted with the package's names/colours, probabilities pseudocolour 0-1, polygons categorized
    assert pr["ok"], pr.get("error")
    assert pr["progress"][-1] == 100.0
    assert map_style["renderer"] == "paletted"
    names = {c[0]: (c[1], c[2]) for c in map_style["classes"]}
    assert names[1] == ("water", "#1e64ff") and names[2] == ("forest", "#00a000")
    assert prob_style["renderer"] == "singlebandpseudocolor" and (prob_style["min"], prob_style["max"]) == (
        0.0,
        1.0,
    )
    assert prob_style["bands"] == 3
    # map.gpkg sits beside map.qml (the raster style) but opens categorized from its own layer_styles
    assert Path(o["map"]).with_suffix(".qml").exists()
    assert mpoly_style["renderer"] == "categorizedSymbol", mpoly_style
    for value, label, colour in mpoly_style["categories"]:
        assert (label, colour) == names[int(value)]
    # cancel mid-run: an exception saying so, nothing under the final name; the rerun resumes
    assert not cancelled["ok"] and "Cancelled" in cancelled["error"], cancelled
    assert 30 <= max(cancelled["progress"] or [0]) < 100
    assert cancelled["cancel_to_end_s"] < 10  # SIGTERM stops it between blocks within seconds
    assert existed is False
    assert rerun["ok"], rerun.get("error")
    resumed = [line for line in rerun["infos"] + rerun["console"] if "blocks resumed" in line]
    assert resumed and not resumed[0].split("blocks resumed")[0].rstrip().endswith(" 0"), resumed


@pytest.mark.slow
def test_every_other_algorithm_on_generated_data(plugins_dir: Path, tmp_path: Path) -> None:
    """embed, reduce, classify, chips, analyze, train, evaluate through processing.run on a 64 px scene; labels
    as a GeoPackage sub-layer, a memory layer and selected features (exported to temporary files first)."""
    img = make_image(tmp_path / "img.tif")
    # label polygons over the three regions (codes 1..3), in another CRS to exercise reprojection
    regions = [
        box(500000, 3999360, 500320, 4000000),
        box(500320, 3999680, 500640, 4000000),
        box(500320, 3999360, 500640, 3999680),
    ]
    labels = gpd.GeoDataFrame(
        {"class": [1, 2, 3], "name": ["red", "green", "blue"]}, geometry=regions, crs="EPSG:32633"
    )
    labels.to_crs("EPSG:4326").to_file(tmp_path / "labels.gpkg", layer="regions")
    t = {
        k: str(tmp_path / v)
        for k, v in dict(
            feat="feat.tif", pca="pca.tif", cls="cls.tif", chips="chips", an="an", model="model", ev="ev.json"
        ).items()
    }
    lab = str(tmp_path / "labels.gpkg") + "|layername=regions"
    steps = [
        {"op": "run", "alg": "rasterlearn:embed", "params": {"INPUT": str(img), "MODEL": "resnet18", "SIZE": 32, "NO_PRETRAINED": True, "TARGET_CRS": "EPSG:32634", "RESOLUTION": 10, "OUTPUT": t["feat"]}},
        {"op": "raster_style", "path": t["feat"]},
        {"op": "run", "alg": "rasterlearn:reduce", "params": {"INPUT": str(img), "COMPONENTS": 3, "OUTPUT": t["pca"]}},
        {"op": "raster_style", "path": t["pca"]},
        {"op": "run", "alg": "rasterlearn:classify", "params": {"INPUT": str(img), "LABELS": {"memory": lab}, "ATTRIBUTE": "class", "CV": 3, "OUTPUT": t["cls"]}},
        {"op": "raster_style", "path": t["cls"]},
        {"op": "run", "alg": "rasterlearn:chips", "params": {"INPUT": str(img), "LABELS": {"selected": lab, "where": "class >= 1"}, "ATTRIBUTE": "class", "SIZE": 32, "STRIDE": 16, "SPLIT": 2, "VAL": 0.25, "TEST": 0.0, "OUTPUT": t["chips"]}},
        {"op": "run", "alg": "rasterlearn:analyze", "params": {"DATASET": t["chips"], "OUTPUT": t["an"]}},
        {"op": "run", "alg": "rasterlearn:train", "params": {"DATASET": t["chips"], "ENCODER": "tu-mobilenetv3_small_050", "EPOCHS": 1, "BATCH_SIZE": 4, "OUTPUT": t["model"]}},
        {"op": "run", "alg": "rasterlearn:evaluate", "params": {"INPUT": t["cls"], "TRUTH": lab, "ATTRIBUTE": "class", "UNLABELLED": 2, "OUTPUT": t["ev"]}},
    ]  # fmt: skip
    emb, emb_style, red, red_style, cls, cls_style, chips, an, train, ev = drive(plugins_dir, steps, tmp_path)
    for r in (emb, red, cls, chips, an, train, ev):
        assert r["ok"], r.get("error")
        assert r["progress"] and r["progress"][-1] == 100.0
    with rasterio.open(t["feat"]) as ds:
        assert ds.count == 512 and ds.crs.to_epsg() == 32634  # read reprojected (a CRS parameter)
    # the CLI's log reaches the Processing log as it happens: warnings as warnings, info as info
    assert any("RANDOM WEIGHTS" in w for w in emb["warnings"]), emb["warnings"]
    assert any(line.startswith("Encoded ") for line in emb["infos"]), emb["infos"]
    assert emb_style["renderer"] == "multibandcolor" and emb_style["rgb"] == [1, 2, 3]
    assert red_style["renderer"] == "multibandcolor" and red_style["bands"] == 3
    assert cls_style["renderer"] == "paletted" and sorted(c[0] for c in cls_style["classes"]) == [1, 2, 3]
    with rasterio.open(t["cls"]) as ds:
        m = ds.read(1)
    assert (m[5, 5], m[5, 60], m[60, 60]) == (1, 2, 3)  # the uniform regions are classified right
    assert (Path(t["chips"]) / "dataset.json").exists() and any(Path(t["an"]).iterdir())
    assert (Path(t["model"]) / "model.json").exists()
    assert ev["results"]["OVERALL_ACCURACY"] > 0.95 and json.loads(Path(t["ev"]).read_text())["per_class"]


@pytest.mark.slow
def test_embed_cancel_leaves_no_output_and_resumes(plugins_dir: Path, tmp_path: Path) -> None:
    """Encoder cancelled mid-run: no feature raster under the final name; the rerun resumes from the feature
    strips written before the cancel (3 strips of 16 feature rows: 48 x 48 tiles of 32 px, 2 MB budget)."""
    big = make_image(tmp_path / "big.tif", size=1536)
    out = tmp_path / "features.tif"
    params = {"INPUT": str(big), "MODEL": "resnet18", "SIZE": 32, "NO_PRETRAINED": True, "MEMORY_MB": 2.0, "OUTPUT": str(out)}  # fmt: skip
    steps = [
        {"op": "run", "alg": "rasterlearn:embed", "params": params, "cancel_at_progress": 45},
        {"op": "exists", "path": str(out)},
        {"op": "run", "alg": "rasterlearn:embed", "params": params},
        {"op": "raster_style", "path": str(out)},
    ]
    cancelled, existed, rerun, style = drive(plugins_dir, steps, tmp_path)
    assert not cancelled["ok"] and "Cancelled" in cancelled["error"], cancelled
    assert 45 <= max(cancelled["progress"]) < 100 and cancelled["cancel_to_end_s"] < 10
    assert existed is False
    assert rerun["ok"], rerun.get("error")
    resumed = [line for line in rerun["infos"] if line.startswith("Resuming session")]
    assert (
        resumed and " 0 of " not in resumed[0] and resumed[0].endswith("of 3 feature strips already written")
    )
    assert rerun["progress"][-1] == 100.0
    with rasterio.open(out) as ds:
        assert (ds.count, ds.width, ds.height) == (512, 48, 48)
        assert np.isfinite(ds.read(1)).all()
    assert style["renderer"] == "multibandcolor" and style["rgb"] == [1, 2, 3]
