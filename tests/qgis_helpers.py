"""Shared by the QGIS plugin tests: QGIS' availability, the plugin ZIP installed into a profile folder, the
headless driver (``tests/qgis_driver.py`` run with Debian's ``/usr/bin/python3``) and small generated data.

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
from shapely.geometry import box

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


QGIS_SKIP_REASON = _qgis_available()
needs_qgis = pytest.mark.skipif(QGIS_SKIP_REASON is not None, reason=QGIS_SKIP_REASON or "")


def install_plugin(root: Path) -> Path:
    """The plugin ZIP built by rasterlearn and extracted into a profile's python/plugins folder under ``root``
    (each test module's ``plugins_dir`` fixture)."""
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


def make_image(path: Path, size: int = 64) -> Path:
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


def make_regions(path: Path, size: int = 64) -> Path:
    """The truth of :func:`make_image` as a label raster: 1 left, 2 top right, 3 bottom right (same grid)."""
    h = size // 2
    data = np.ones((1, size, size), dtype="uint8")
    data[0, :h, h:] = 2
    data[0, h:, h:] = 3
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=from_origin(500000, 4000000, 10, 10), **profile) as ds:
        ds.write(data)
    return path


def make_region_polygons(path: Path) -> Path:
    """Polygons over the three regions of :func:`make_image` with fields ``class`` (1..3) and ``name``."""
    regions = [
        box(500000, 3999360, 500320, 4000000),
        box(500320, 3999680, 500640, 4000000),
        box(500320, 3999360, 500640, 3999680),
    ]
    gpd.GeoDataFrame(
        {"class": [1, 2, 3], "name": ["red", "green", "blue"]}, geometry=regions, crs="EPSG:32633"
    ).to_file(path)
    return path
