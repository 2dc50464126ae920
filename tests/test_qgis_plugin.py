"""The QGIS plugin under real (headless) QGIS, calling the real rasterlearn CLI.

QGIS' Python bindings are Debian's (``/usr/bin/python3``), not this venv's, so each test writes a job file and
runs ``tests/qgis_driver.py`` in a subprocess with ``QT_QPA_PLATFORM=offscreen``: it starts QgsApplication,
initializes Processing, registers the provider from the plugin ZIP installed into a temporary profile folder,
and runs ``processing.run`` steps. The plugin runs this venv's ``rasterlearn`` ($RASTERLEARN_EXECUTABLE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from rasterlearn.qgis_package import build_plugin_zip

SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("qgis_driver.py")
ALL_IDS = sorted(
    f"rasterlearn:{a}"
    for a in [
        "embed",
        "reduce",
        "cluster",
        "similarity",
        "classify",
        "chips",
        "analyze",
        "train",
        "predict",
        "evaluate",
        "vectorize",
        "info",
    ]
)


def _qgis_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} does not exist"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, env=env, check=False
    )
    if probe.returncode != 0:
        how = (
            "run .ci/run (it installs it with apt-get)"
            if shutil.which("apt-get")
            else "apt-get is unavailable"
        )
        return f"QGIS' Python bindings are not installed for {SYSTEM_PYTHON} (python3-qgis); {how}"
    return None


_REASON = _qgis_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin ZIP built by rasterlearn and extracted into a profile's python/plugins folder."""
    root = tmp_path_factory.mktemp("profile")
    z = build_plugin_zip(root / "rasterlearn_qgis.zip")
    plugins = root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(z).extractall(plugins)
    return plugins


def drive(plugins: Path, steps: list[dict[str, Any]], tmp: Path, timeout: int = 600) -> list[Any]:
    job = tmp / f"job_{len(list(tmp.glob('job_*.json')))}.json"
    job.write_text(json.dumps(steps), encoding="utf-8")
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        # the CLI under test: this venv's, or another one's ($RASTERLEARN_TEST_EXECUTABLE)
        "RASTERLEARN_EXECUTABLE": os.environ.get(
            "RASTERLEARN_TEST_EXECUTABLE", str(Path(sys.executable).with_name("rasterlearn"))
        ),
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp),  # QGIS writes its settings profile under HOME
    }
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(DRIVER), str(plugins), str(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        assert not (isinstance(r, dict) and "exception" in r), r["exception"]
    return results


def _image(path: Path, size: int = 64) -> Path:
    """Three uniform regions (red left, green top right, blue bottom right) plus noise, UTM 33N, 10 m."""
    rng = np.random.default_rng(0)
    data = np.zeros((3, size, size), dtype="int32")
    h = size // 2
    data[:, :, :h] = np.array([200, 40, 40])[:, None, None]
    data[:, :h, h:] = np.array([40, 200, 40])[:, None, None]
    data[:, h:, h:] = np.array([40, 40, 200])[:, None, None]
    data = np.clip(data + rng.integers(-10, 11, data.shape), 0, 255).astype("uint8")
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=from_origin(500000, 4000000, 10, 10), **profile) as ds:
        ds.write(data)
    return path


def _regions(path: Path, size: int = 64) -> Path:
    """The truth of :func:`_image` as a label raster: 1 left, 2 top right, 3 bottom right (same grid)."""
    h = size // 2
    data = np.ones((1, size, size), dtype="uint8")
    data[0, :h, h:] = 2
    data[0, h:, h:] = 3
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=from_origin(500000, 4000000, 10, 10), **profile) as ds:
        ds.write(data)
    return path


def _region_polygons(path: Path) -> Path:
    """Polygons over the three regions of :func:`_image` with fields ``class`` (1..3) and ``name``."""
    regions = [
        box(500000, 3999360, 500320, 4000000),
        box(500320, 3999680, 500640, 4000000),
        box(500320, 3999360, 500640, 3999680),
    ]
    gpd.GeoDataFrame(
        {"class": [1, 2, 3], "name": ["red", "green", "blue"]}, geometry=regions, crs="EPSG:32633"
    ).to_file(path)
    return path


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
    img = _image(tmp_path / "img.tif")
    truth = _regions(tmp_path / "truth.tif")
    labels = _region_polygons(tmp_path / "labels.gpkg")
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
    img = _image(tmp_path / "img.tif")
    big = _image(tmp_path / "big.tif", size=384)
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
    img = _image(tmp_path / "img.tif")
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


def test_settings_dialog_and_setup_action(plugins_dir: Path, tmp_path: Path) -> None:
    """The settings dialog and options page save and load the executable and device, which the algorithms'
    commands then use; 'Set up rasterlearn' shows the exact uv commands (CUDA or CPU wheels) and runs exactly
    those (recorded here, no network) only when the user agrees, then points the plugin at the new env."""
    fake = tmp_path / "bin" / "rasterlearn"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    fake.chmod(0o755)
    uv = "/opt/uv/bin/uv"
    steps = [
        {"op": "settings_dialog", "exe": str(fake)},
        {"op": "setup_action", "uv": uv, "gpu": None, "accept": False},
        {"op": "setup_action", "uv": uv, "gpu": "NVIDIA H200", "accept": True},
        {"op": "setup_action", "uv": None, "gpu": None, "accept": True},
    ]
    dialog, declined, accepted, no_uv = drive(plugins_dir, steps, tmp_path)
    assert dialog["saved"] == [str(fake), "cuda:1", 1]
    assert dialog["loaded"] == [str(fake), "cuda:1"]
    cmd = dialog["predict_command"]
    assert cmd[0] == str(fake) and cmd[cmd.index("--device") + 1] == "cuda:1"
    assert dialog["after_cancel"] == "cuda:1" and dialog["page_loaded"] == [str(fake), "cuda:1"]
    assert dialog["unknown_device"] == "auto" and dialog["page_saved"] == "cpu"

    def expected(env: str, index: str) -> list[list[str]]:
        py = f"{env}/bin/python"
        return [
            [uv, "venv", "--python", "3.12", "--seed", env],
            [uv, "pip", "install", "--python", py, "--index-url", index, "torch", "torchvision"],
            [uv, "pip", "install", "--python", py, "rasterlearn"],
        ]

    env = declined["env_dir"]
    assert env.endswith("/profiles/default/rasterlearn/env") and env.startswith(str(tmp_path))
    (kind, _title, text), = declined["shown"]  # fmt: skip
    assert kind == "question" and "No NVIDIA GPU found - CPU-only" in text and env in text
    for c in expected(env, "https://download.pytorch.org/whl/cpu"):
        assert " ".join(c) in text
    assert declined["ran"] == [] and declined["executable_setting"] == ""  # declined: nothing runs
    (kind, _title, text), = accepted["shown"]  # fmt: skip
    assert "NVIDIA GPU found: NVIDIA H200 - CUDA" in text
    assert accepted["ran"] == expected(env, "https://download.pytorch.org/whl/cu126")
    assert accepted["executable_setting"] == f"{env}/bin/rasterlearn"
    (kind, _title, text), = no_uv["shown"]  # fmt: skip
    assert kind == "information" and "uv is needed" in text and no_uv["ran"] == []


@pytest.mark.slow
def test_check_installation_action(plugins_dir: Path, tmp_path: Path) -> None:
    """'Check installation' on this venv's rasterlearn: versions, the device and a one-window smoke run."""
    import torch

    import rasterlearn

    exe = os.environ.get("RASTERLEARN_TEST_EXECUTABLE", str(Path(sys.executable).with_name("rasterlearn")))
    (res,) = drive(plugins_dir, [{"op": "check_action", "exe": exe}], tmp_path)
    (kind, title, text), = res["shown"]  # fmt: skip
    assert kind == "information" and title == "rasterlearn installation", text
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert lines["executable"] == exe and lines["device"] == "cpu" and lines["smoke_window_ok"] == "True"
    if "RASTERLEARN_TEST_EXECUTABLE" not in os.environ:
        assert lines["rasterlearn"] == rasterlearn.__version__ and lines["torch"] == torch.__version__


def _documented_blocks(names: list[str]) -> list[str]:
    """The ```bash blocks of docs/qgis.md that follow ``<!-- contract: NAME`` markers, in that order."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "qgis.md").read_text(encoding="utf-8")
    blocks = []
    for name in names:
        m = re.search(rf"<!-- contract: {name}\b[^\n]*-->\s*\n```bash\n(.*?)\n```", text, re.S)
        assert m, f"docs/qgis.md has no ```bash block after '<!-- contract: {name}'"
        blocks.append(m.group(1))
    return blocks


def test_documented_headless_install_and_cluster(tmp_path: Path) -> None:
    """The contract, exactly as docs/qgis.md documents it: build the ZIP with the CLI, unzip it into a fresh
    profile folder, start QGIS headless on that profile, load and enable the plugin with QGIS' plugin loader and
    processing.run('rasterlearn:cluster', ...). The blocks are read from the docs, so they cannot drift."""
    build, install, headless = _documented_blocks(["build", "install", "headless"])
    assert build.startswith("uv run rasterlearn qgis-plugin")
    work = tmp_path / "work"
    work.mkdir()
    _image(work / "image.tif")
    exe = Path(os.environ.get("RASTERLEARN_TEST_EXECUTABLE", Path(sys.executable).with_name("rasterlearn")))
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "RASTERLEARN_EXECUTABLE", "VIRTUAL_ENV")
        },
        "HOME": str(tmp_path / "home"),  # ~ in the docs: a fresh profile folder
        "PATH": f"{exe.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    # the build command without 'uv run' (this venv's rasterlearn is on PATH; uv run needs the project folder)
    script = "\n".join(["set -euo pipefail", build.removeprefix("uv run "), install, headless])
    proc = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert proc.stdout.strip().splitlines()[-1] == "{'OUTPUT': 'clusters.tif'}", proc.stdout
    profile = tmp_path / "home" / ".local/share/QGIS/QGIS3/profiles/default"
    assert (profile / "python/plugins/rasterlearn_qgis/metadata.txt").is_file()
    assert zipfile.ZipFile(work / "rasterlearn_qgis.zip").testzip() is None
    with rasterio.open(work / "clusters.tif") as ds:
        m = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and m.shape == (64, 64)
    assert set(np.unique(m)) <= set(range(1, 7)) and len(np.unique(m)) >= 3
    assert (work / "clusters.qml").exists()  # styled for QGIS


@pytest.mark.slow
def test_embed_cancel_leaves_no_output_and_resumes(plugins_dir: Path, tmp_path: Path) -> None:
    """Encoder cancelled mid-run: no feature raster under the final name; the rerun resumes from the feature
    strips written before the cancel (3 strips of 16 feature rows: 48 x 48 tiles of 32 px, 2 MB budget)."""
    big = _image(tmp_path / "big.tif", size=1536)
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
