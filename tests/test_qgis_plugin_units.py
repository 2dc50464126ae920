"""The QGIS plugin's pure-Python parts (no QGIS needed): argument lists, event parsing, the runner's cancel
and error paths with recorded event lines, setup commands, the plugin ZIP and its import rules."""

from __future__ import annotations

import ast
import configparser
import json
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parents[1] / "qgis_plugin"
sys.path.insert(0, str(PLUGIN_ROOT))

from rasterlearn_qgis import install  # noqa: E402
from rasterlearn_qgis.events import ProgressState, parse_event  # noqa: E402
from rasterlearn_qgis.runner import error_message, run_cli  # noqa: E402
from rasterlearn_qgis.specs import ALGORITHMS, INPUT_KINDS, OUTPUT_KINDS, build_args, spec_by_id  # noqa: E402

from rasterlearn.qgis_package import build_plugin_zip  # noqa: E402

# Recorded --progress json lines (schema v1) of a run that fails after some progress
RECORDED = [
    {"v": 1, "event": "started", "time": 1.0, "job": "cluster", "total": 4, "unit": "blocks"},
    {"v": 1, "event": "phase", "time": 1.1, "phase": "fit", "total": None, "unit": "", "index": 0},
    {"v": 1, "event": "phase", "time": 1.2, "phase": "apply", "total": 4, "unit": "blocks", "index": 1},
    {"v": 1, "event": "progress", "time": 1.3, "done": 1, "total": 4, "fraction": 0.25, "phase": "apply"},
    {"v": 1, "event": "log", "time": 1.4, "level": "warning", "message": "band 2 is constant", "logger": "x"},
    {"v": 1, "event": "progress", "time": 1.5, "done": 3, "total": 4, "fraction": None, "phase": "apply"},
    {
        "v": 1,
        "event": "failed",
        "time": 1.6,
        "message": "Attribute 'klass' not in labels.gpkg; available: class, id",
        "exit_code": 2,
    },
]


def test_specs_are_consistent() -> None:
    ids = [s.id for s in ALGORITHMS]
    assert ids == [
        "embed", "reduce", "cluster", "similarity", "classify", "chips",
        "analyze", "train", "predict", "evaluate", "vectorize", "info",
    ]  # fmt: skip
    for spec in ALGORITHMS:
        names = [p.name for p in spec.params]
        assert len(names) == len(set(names)), spec.id
        for p in spec.params:
            assert p.kind in INPUT_KINDS + OUTPUT_KINDS, (spec.id, p.name)
            if p.kind in ("field", "bands"):
                assert p.parent in names, (spec.id, p.name)
            if p.kind == "enum" and p.default is not None:
                assert p.default in p.options
        for out in spec.styles:
            assert out in names


def test_build_args_cluster_and_predict(tmp_path: Path) -> None:
    cl = build_args(
        spec_by_id("cluster"),
        {
            "INPUT": "/d/img.tif",
            "CLUSTERS": 5,
            "BANDS": [3, 2, 1],
            "STANDARDIZE": False,
            "OUTPUT": "/d/c.tif",
        },
    )
    assert cl == [
        "cluster", "--method", "kmeans", "--clusters", "5", "--bands", "3,2,1", "--no-standardize",
        "--sample-size", "100000", "--seed", "0", "--output", "/d/c.tif", "--progress", "json", "/d/img.tif",
    ]  # fmt: skip
    existing = tmp_path / "map.tif"
    existing.write_bytes(b"x")
    pr = build_args(
        spec_by_id("predict"),
        {"MODEL": "/m", "INPUT": "/d/img.tif", "OUTPUT": str(existing), "TTA": "flips", "THRESHOLD": 0.3},
        device="cuda:1",
        progress_json=False,
    )
    assert pr[:1] == ["predict"] and pr[-2:] == ["/m", "/d/img.tif"]
    assert ["--output", str(existing), "--overwrite"] == pr[pr.index("--output") : pr.index("--output") + 3]
    assert "--progress" not in pr and pr[pr.index("--device") : pr.index("--device") + 2] == [
        "--device",
        "cuda:1",
    ]
    assert pr[pr.index("--tta") : pr.index("--tta") + 2] == ["--tta", "flips"]
    assert "--probabilities" not in pr and "--vectorize" not in pr  # optional outputs left out
    tr = build_args(spec_by_id("train"), {"DATASET": "/chips", "OUTPUT": "/model"}, device="cuda")
    assert tr[tr.index("--accelerator") : tr.index("--accelerator") + 2] == ["--accelerator", "gpu"]
    info = build_args(spec_by_id("info"), {"INPUT": "/d/img.tif", "STATS": True, "OUTPUT": "/d/i.json"})
    assert info == ["info", "--json", "--stats", "/d/img.tif"]  # the plugin writes OUTPUT itself


def test_parse_event_and_state() -> None:
    assert parse_event("not json") is None
    assert parse_event('{"v": 2, "event": "progress"}') is None
    assert parse_event('{"v": 1, "event": "nonsense"}') is None
    state = ProgressState()
    seen = []
    for ev in RECORDED:
        parsed = parse_event(json.dumps(ev) + "\n")
        assert parsed is not None
        state.update(parsed)
        seen.append((state.phase, round(state.percent, 1)))
    assert seen[3] == ("apply", 25.0) and seen[5] == ("apply", 75.0)  # fraction null -> done/total
    assert state.job == "cluster" and state.phase_index == 1
    assert state.logs == [("warning", "band 2 is constant")]
    assert state.outcome == "failed" and state.exit_code == 2


def _fake_cli(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_cli.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(script)]


def test_run_cli_failed_event_gives_one_line_message(tmp_path: Path) -> None:
    lines = "\n".join(json.dumps(ev) for ev in RECORDED)
    cmd = _fake_cli(
        tmp_path,
        f"""
        import sys
        print("stdout text")
        sys.stderr.write({lines!r} + "\\n")
        sys.exit(2)
        """,
    )
    events = []
    res = run_cli(cmd, on_event=lambda ev, st: events.append((ev["event"], st.percent)))
    assert res.returncode == 2 and not res.ok and not res.cancelled
    assert error_message(res) == "Attribute 'klass' not in labels.gpkg; available: class, id"
    assert ("progress", 75.0) in events and res.stdout.strip() == "stdout text"


def test_run_cli_plain_error_line(tmp_path: Path) -> None:
    cmd = _fake_cli(
        tmp_path, 'import sys\nsys.stderr.write("Error: no.tif does\\n  not exist\\n")\nsys.exit(2)\n'
    )
    res = run_cli(cmd)
    assert error_message(res) == "no.tif does not exist"


def test_run_cli_cancel_sigterm_then_kill(tmp_path: Path) -> None:
    polite = _fake_cli(
        tmp_path,
        """
        import json, signal, sys, time
        def stop(*_):
            sys.stderr.write(json.dumps({"v": 1, "event": "cancelled", "time": 0, "message": "stopped"}) + "\\n")
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        for i in range(600):
            sys.stderr.write(json.dumps({"v": 1, "event": "progress", "time": 0, "done": i, "total": 600,
                                         "fraction": i / 600, "phase": "apply"}) + "\\n")
            sys.stderr.flush()
            time.sleep(0.05)
        """,
    )
    state = {"n": 0}

    def cancel_after_two() -> bool:
        return state["n"] >= 2

    res = run_cli(
        polite, on_event=lambda ev, st: state.__setitem__("n", state["n"] + 1), is_cancelled=cancel_after_two
    )
    assert res.cancelled and res.returncode == 130 and not res.killed
    assert res.state.outcome == "cancelled"
    stubborn = _fake_cli(
        tmp_path,
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stderr.write('ready\\n'); sys.stderr.flush()\ntime.sleep(60)\n",
    )
    ready: list[str] = []
    res = run_cli(stubborn, on_text=ready.append, is_cancelled=lambda: bool(ready), grace_s=0.5)
    assert res.cancelled and res.killed and res.returncode != 0


def test_setup_commands_and_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = install.setup_commands("uv", tmp_path / "env", cuda=False)
    gpu = install.setup_commands("uv", tmp_path / "env", cuda=True)
    assert cpu[0][:2] == ["uv", "venv"] and "https://download.pytorch.org/whl/cpu" in cpu[1]
    assert "https://download.pytorch.org/whl/cu126" in gpu[1] and cpu[2][-1] == "rasterlearn"
    fake = tmp_path / "rl"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RASTERLEARN_EXECUTABLE", str(fake))
    assert install.find_executable(None) == str(fake)
    assert install.find_executable(str(tmp_path / "missing")) == str(fake)
    assert install.check_command(fake)[0] == str(tmp_path / "python")


def test_plugin_zip_and_imports(tmp_path: Path) -> None:
    out = build_plugin_zip(tmp_path / "rasterlearn_qgis.zip")
    names = zipfile.ZipFile(out).namelist()
    for required in (
        "metadata.txt",
        "__init__.py",
        "icon.png",
        "LICENSE",
        "provider.py",
        "algorithms/base.py",
    ):
        assert f"rasterlearn_qgis/{required}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(zipfile.ZipFile(out).read("rasterlearn_qgis/metadata.txt").decode())
    assert cfg.get("general", "qgisMinimumVersion") == "3.22"
    assert (
        cfg.get("general", "supportsQt6") == "True" and cfg.get("general", "hasProcessingProvider") == "yes"
    )
    # imports: only qgis.core, qgis.gui, qgis.PyQt, the standard library and the plugin itself
    allowed_qgis = {"qgis.core", "qgis.gui", "qgis.PyQt", "qgis"}
    for py in (PLUGIN_ROOT / "rasterlearn_qgis").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                assert top not in ("torch", "rasterlearn", "numpy", "processing"), (py.name, m)
                if top == "qgis":
                    assert any(m == a or m.startswith(a + ".") for a in allowed_qgis), (py.name, m)
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", (py.name, m)
    with pytest.raises(OSError, match="exists"):
        build_plugin_zip(out)
    from rasterlearn.cli import main

    assert main(["qgis-plugin", "-o", str(out)]) == 2  # exists
    assert main(["qgis-plugin", "-o", str(out), "--overwrite"]) == 0
    assert sorted(zipfile.ZipFile(out).namelist()) == sorted(names)


@pytest.mark.slow
def test_check_installation_command_runs_a_window() -> None:
    """'Check installation' against this environment: versions, device and a one-window smoke run."""
    import subprocess

    exe = Path(sys.executable).with_name("rasterlearn")
    out = subprocess.run(
        install.check_command(exe, "cpu"), capture_output=True, text=True, check=True, timeout=300
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    import torch

    import rasterlearn

    assert info["rasterlearn"] == rasterlearn.__version__ and info["torch"] == torch.__version__
    assert info["device"] == "cpu" and info["smoke_window_ok"] is True


def test_train_architectures_match_the_registry() -> None:
    from rasterlearn.models import list_models

    arch = next(p for p in spec_by_id("train").params if p.name == "ARCH")
    assert sorted(arch.options) == sorted(list_models())


def test_build_args_evaluate_raster_truth_extents_and_memory() -> None:
    ev = spec_by_id("evaluate")
    assert ev.one_of == (("TRUTH", "TRUTH_RASTER"),)
    args = build_args(
        ev,
        {
            "INPUT": "/d/map.tif",
            "TRUTH_RASTER": "/d/truth.tif",
            "TRUTH_NAMES": "1=a,2=b",
            "OUTPUT": "/d/m.json",
        },
        progress_json=False,
    )
    assert args[-1] == "/d/map.tif" and args.count("--truth") == 1
    assert args[args.index("--truth") + 1] == "/d/truth.tif" and "--attribute" not in args
    assert args[args.index("--truth-names") + 1] == "1=a,2=b"
    assert args[args.index("--class-match") + 1] == "auto"
    vec = build_args(ev, {"INPUT": "/m.tif", "TRUTH": "/t.gpkg", "ATTRIBUTE": "cls", "OUTPUT": "/o.json"})
    assert vec[vec.index("--truth") + 1] == "/t.gpkg" and vec[vec.index("--attribute") + 1] == "cls"
    pr = build_args(
        spec_by_id("predict"),
        {"MODEL": "/m", "INPUT": "/i.tif", "EXTENT": (1.0, 2.0, 3.5, 4.0), "OUTPUT": "/o.tif"},
    )
    assert pr[pr.index("--aoi") + 1] == "1.0,2.0,3.5,4.0"
    em = build_args(spec_by_id("embed"), {"INPUT": "/i.tif", "MEMORY_MB": 2.5, "OUTPUT": "/f.tif"})
    assert em[em.index("--memory-mb") + 1] == "2.5"
    assert "--memory-mb" not in build_args(spec_by_id("embed"), {"INPUT": "/i.tif", "OUTPUT": "/f.tif"})
    em = build_args(spec_by_id("embed"), {"INPUT": "/i.tif", "TARGET_CRS": "EPSG:32634", "RESOLUTION": 20})
    assert em[em.index("--target-crs") + 1] == "EPSG:32634" and em[em.index("--resolution") + 1] == "20.0"
