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
from shapely.geometry import Point

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
        "RASTERLEARN_EXECUTABLE": str(Path(sys.executable).with_name("rasterlearn")),
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


def test_plugin_core_workflows(plugins_dir: Path, tmp_path: Path) -> None:
    """Provider registers every algorithm; cluster, vectorize, info run through processing.run with
    the real CLI; outputs load styled; progress reaches 100 %; a bad input raises the CLI's message."""
    img = _image(tmp_path / "img.tif")
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[Point(900000, 100000)], crs="EPSG:32633").to_file(far)
    o = {
        k: str(tmp_path / v)
        for k, v in dict(
            cl="cl.tif", poly="cl.gpkg", map="map.tif", prob="prob.tif", mpoly="map.gpkg"
        ).items()
    }
    steps = [
        {"op": "algorithms"},
        {"op": "run", "alg": "rasterlearn:cluster", "params": {"INPUT": str(img), "CLUSTERS": 3, "OUTPUT": o["cl"]}},
        {"op": "raster_style", "path": o["cl"]},
        {"op": "run", "alg": "rasterlearn:vectorize", "params": {"INPUT": o["cl"], "OUTPUT": o["poly"]}},
        {"op": "vector_style", "path": o["poly"]},
        {"op": "run", "alg": "rasterlearn:info", "params": {"INPUT": str(img)}},
        {"op": "run", "alg": "rasterlearn:similarity", "params": {"INPUT": str(img), "REFERENCES": str(far), "OUTPUT": str(tmp_path / "s.tif")}},
    ]  # fmt: skip
    algs, cl, cl_style, vec, vec_style, info, bad = drive(plugins_dir, steps, tmp_path)
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
    # bad input: the CLI's one-line message as a QgsProcessingException
    assert not bad["ok"]
    assert "overlap" in bad["error"].lower() and "Traceback" not in bad["error"], bad["error"]
    assert not (tmp_path / "s.tif").exists()


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
        {"op": "run", "alg": "rasterlearn:predict", "params": params, "cancel_at_progress": True},
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
    assert 0 < max(cancelled["progress"] or [0]) < 100
    assert existed is False
    assert rerun["ok"], rerun.get("error")
    resumed = [line for line in rerun["console"] if "blocks resumed" in line]
    assert resumed and not resumed[0].split("blocks resumed")[0].rstrip().endswith(" 0"), resumed
