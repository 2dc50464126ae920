"""Shared helpers: atomic writes leave either the old or the new file, stable hashes never change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rasterlearn._util import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    json_default,
    stable_hash,
    temp_path,
)


def test_atomic_write_text_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("old", encoding="utf-8")
    assert atomic_write_text(p, "néw", fsync=True) == p
    assert p.read_text(encoding="utf-8") == "néw"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_old_file_and_removes_temporary_on_error(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("old", encoding="utf-8")

    def fail(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, fail)
    assert p.read_text(encoding="utf-8") == "old"
    assert not temp_path(p).exists()


def test_atomic_write_suffix_for_writers_that_append_extensions(tmp_path: Path) -> None:
    p = tmp_path / "arrays.npz"
    atomic_write(p, lambda tmp: np.savez(tmp, a=np.arange(3)), suffix=".npz")
    with np.load(p) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["arrays.npz"]


def test_json_default_numpy_and_paths(tmp_path: Path) -> None:
    data = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(2), "p": Path("x/y")}
    atomic_write_json(tmp_path / "d.json", data, default=json_default)
    assert json.loads((tmp_path / "d.json").read_text(encoding="utf-8")) == {
        "i": 3,
        "f": 0.5,
        "a": [0, 1],
        "p": str(Path("x/y")),
    }


def test_stable_hash_encoding_is_pinned() -> None:
    # parameter fingerprints of earlier runs depend on this exact encoding (resume, chip folders)
    params = {"b": 2, "a": [1.5, "x"], "p": Path("/d")}
    text = json.dumps(params, sort_keys=True, default=str)
    assert stable_hash(params) == hashlib.sha256(text.encode()).hexdigest()[:16]
    arr = np.arange(4, dtype="float32")
    h = hashlib.sha256(text.encode())
    h.update(arr.tobytes())
    assert stable_hash(params, arr, None) == h.hexdigest()[:16]
    assert stable_hash(params, arr) != stable_hash(params)
    assert stable_hash({"a": [1.5, "x"], "b": 2, "p": "/d"}) == stable_hash(params)


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "b.bin"
    p.write_bytes(b"x" * 3_000_001)
    assert file_sha256(p, chunk_size=1 << 16) == hashlib.sha256(b"x" * 3_000_001).hexdigest()
