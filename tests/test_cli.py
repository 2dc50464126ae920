"""The command line: version, info (tables and JSON), error handling and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rasterlearn import __version__
from rasterlearn.cli import app, main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"rasterlearn {__version__}"


def test_info_json_contract(capsys, make_raster) -> None:
    data = np.zeros((3, 20, 30), dtype="uint16")
    path = make_raster(data, nodata=0, descriptions=["red", "green", "blue"])
    code, out, _ = run_cli(capsys, "info", str(path), "--json")
    assert code == 0
    d = json.loads(out)
    assert (d["width"], d["height"], d["epsg"], d["nodata"]) == (30, 20, 32633, 0.0)
    assert "PROJCRS" in d["crs"] or "PROJCS" in d["crs"]
    assert d["transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0]
    assert [(b["index"], b["dtype"], b["description"]) for b in d["bands"]] == [
        (1, "uint16", "red"),
        (2, "uint16", "green"),
        (3, "uint16", "blue"),
    ]


def test_info_stats_and_tables(capsys, make_raster) -> None:
    data = np.arange(2 * 16 * 16, dtype="float32").reshape(2, 16, 16)
    path = make_raster(data, nodata=0)
    code, out, _ = run_cli(capsys, "info", str(path), "--json", "--stats")
    assert code == 0
    stats = json.loads(out)["statistics"]
    assert len(stats) == 2 and stats[0]["count"] == 255  # the single 0 pixel is nodata
    code, _, err = run_cli(capsys, "info", str(path), "--stats")
    assert code == 0 and "EPSG:32633" in err and "statistics" in err


def test_errors_exit_2_without_traceback(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "info", str(tmp_path / "missing.tif"))
    assert code == 2
    assert "Raster not found" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "-v", "info", str(tmp_path / "missing.tif"))
    assert code == 2 and "Traceback" in err


def test_usage_errors(capsys) -> None:
    code, _, err = run_cli(capsys, "info")
    assert code == 2 and "raster" in err.lower() and "Usage" in err
    code, _, _ = run_cli(capsys, "no-such-command")
    assert code == 2


def test_only_implemented_commands_are_listed() -> None:
    import rasterlearn.cli as cli

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "info" in names
    for c in app.registered_commands:
        assert c.callback is not None and c.callback.__doc__, f"command {c.name} needs a docstring (its help)"
    assert cli.main is main


def test_console_script(make_raster) -> None:
    path = make_raster(np.ones((1, 4, 4), dtype="uint8"))
    res = subprocess.run(
        [sys.executable, "-m", "rasterlearn", "info", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["width"] == 4


@pytest.mark.realdata
def test_info_on_every_shared_raster(capsys, shared_data) -> None:
    for path in sorted(shared_data.glob("*/*.tif")):
        code, out, err = run_cli(capsys, "info", str(path), "--json")
        assert code == 0, err
        d = json.loads(out)
        assert d["width"] > 0 and len(d["transform"]) == 6 and d["bands"]
        assert all(b["index"] >= 1 and b["dtype"] for b in d["bands"])
