"""The tutorials in docs/tutorials/ run as written when ../shared/data is present.

Each tutorial's ```bash and ```python blocks are executed in order in a scratch folder laid out like the
project (``examples/`` linked, ``../shared`` next to it), so the paths in the text work unchanged. Python
blocks share one namespace, like a reader typing them into one session; ```yaml and ```text blocks are
illustrations and are not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of a markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def test_every_tutorial_has_runnable_blocks() -> None:
    names = sorted(p.name for p in TUTORIALS.glob("*.md"))
    assert names == ["assessment.md", "buildings.md", "features.md", "landcover.md"]
    for name in names:
        langs = [lang for lang, _ in code_blocks(TUTORIALS / name)]
        assert "python" in langs and "bash" in langs, name
        for lang, code in code_blocks(TUTORIALS / name):
            if lang == "python":
                compile(code, f"{name}:python", "exec")  # at least syntactically valid


def test_example_config_matches_the_tutorial() -> None:
    from rasterlearn.pipeline import load_config

    cfg = load_config(ROOT / "examples" / "buildings.yaml")
    assert isinstance(cfg.scenes, list) and [s.split for s in cfg.scenes] == [None, "tst"]
    assert cfg.scenes[0].image.endswith("buildings_ma/scene_22978945.tif")
    assert "examples/buildings.yaml" in (TUTORIALS / "buildings.md").read_text()


def _run_tutorial(name: str, shared_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    old = Path.cwd()
    os.chdir(work)
    try:
        for i, (lang, code) in enumerate(code_blocks(TUTORIALS / name)):
            if lang == "bash":
                proc = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", code],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                assert proc.returncode == 0, f"{name} block {i} failed:\n{code}\n{proc.stderr[-3000:]}"
            elif lang == "python":
                exec(compile(code, f"{name}:block{i}", "exec"), namespace)
    finally:
        os.chdir(old)


@pytest.mark.slow
@pytest.mark.realdata
def test_buildings_tutorial(shared_data: Path, tmp_path: Path) -> None:
    _run_tutorial("buildings.md", shared_data, tmp_path)
    run = tmp_path / "project" / "runs" / "buildings"
    assert (run / "report.html").exists() and (run / "predict" / "ma_23429155.tif").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_landcover_tutorial(shared_data: Path, tmp_path: Path) -> None:
    _run_tutorial("landcover.md", shared_data, tmp_path)
    assert (tmp_path / "project" / "runs" / "landcover" / "report.html").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_features_tutorial(shared_data: Path, tmp_path: Path) -> None:
    _run_tutorial("features.md", shared_data, tmp_path)
    out = tmp_path / "project" / "runs" / "features"
    for name in (
        "naip_2019_pca.tif",
        "naip_2019_clusters.tif",
        "naip_change_similarity.tif",
        "s2_similarity.tif",
    ):
        assert (out / name).exists(), name


@pytest.mark.slow
@pytest.mark.realdata
def test_assessment_tutorial(shared_data: Path, tmp_path: Path) -> None:
    _run_tutorial("assessment.md", shared_data, tmp_path)
    out = tmp_path / "project" / "runs" / "assess"
    result = json.loads((out / "assessment.json").read_text())
    assert result["design"]["design"] == "stratified" and result["n"] >= 450
    assert 0.3 < result["overall_accuracy"]["estimate"] < 1.0
    for suffix in (".csv", ".png", ".html"):
        assert (out / f"assessment{suffix}").exists()
