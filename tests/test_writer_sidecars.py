"""Sidecars (.aux.xml, .qml) are written under temporary names and renamed right after the raster."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

import rasterlearn.io.writer as writer_mod
from rasterlearn.errors import OutputError
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array

GRID = Grid(20, 30, Affine(2.0, 0.0, 300_000.0, 0.0, -2.0, 5_000_000.0), "EPSG:32632")
CLASSES = {"category_names": {1: "water", 2: "forest"}, "colormap": {1: "#1f77b4", 2: "#2ca02c"}}


def _classes() -> np.ndarray:
    return np.random.default_rng(0).integers(1, 3, (1, 20, 30)).astype("uint8")


def test_sidecars_are_renamed_from_temporary_names_right_after_the_raster(tmp_path, monkeypatch):
    real = writer_mod.os.replace
    renames: list[tuple[str, str]] = []

    def replace(a, b):
        renames.append((Path(a).name, Path(b).name))
        real(a, b)

    monkeypatch.setattr(writer_mod.os, "replace", replace)
    write_array(tmp_path / "m.tif", _classes(), GRID, nodata=0, **CLASSES)
    final = [r for r in renames if not r[1].startswith(".")]  # progress/journal files are hidden
    assert final == [
        (".m.tif.cog.tmp.tif", "m.tif"),
        (".m.tif.aux.xml.tmp", "m.tif.aux.xml"),
        (".m.qml.tmp", "m.qml"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qml", "m.tif", "m.tif.aux.xml"]


def test_a_failed_sidecar_write_keeps_the_old_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "m.tif"
    write_array(out, _classes(), GRID, nodata=0, **CLASSES)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "_write_text", full)
    with pytest.raises(OutputError, match="no space left on"):
        write_array(out, np.full((1, 20, 30), 2, "uint8"), GRID, nodata=0, **CLASSES)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old raster and sidecars intact
