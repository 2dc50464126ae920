"""The QGIS plugin's installation: the documented headless install run literally from docs/qgis.md (the
contract), the settings dialog and options page, "Set up rasterlearn" and "Check installation"."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.qgis_helpers import (
    drive,
    install_plugin,
    make_image,
    needs_qgis,
)

pytestmark = needs_qgis


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("profile"))


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
    make_image(work / "image.tif")
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
