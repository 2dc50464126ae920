"""A command refused before any work prints its one-line error and nothing else (no empty progress bar)."""

from __future__ import annotations

import numpy as np

from rasterlearn.cli import main
from tests.conftest import write_tif


def test_a_refused_command_prints_only_its_error(capsys, tmp_path):
    img = write_tif(tmp_path / "x.tif", (np.random.default_rng(0).random((3, 16, 16)) * 100).astype("uint16"))
    assert main(["cluster", str(img), "--method", "kmeans", "--clusters", "3", "-o", str(img)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("Error: "), repr(captured.err[:80])  # not even a blank line first
    text = " ".join((captured.out + captured.err).split())
    assert text.startswith("Error: the output") and "would destroy the input" in text, text
    assert " blocks" not in text.replace(str(tmp_path), ""), text  # no bar drawn for work that never started
