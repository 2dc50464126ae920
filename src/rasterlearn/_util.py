"""Small helpers shared by the stages: atomic file writes, JSON defaults and stable hashes.

Value layer: imports only the standard library and numpy, so every module may use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.errors import ConfigError, OutputError

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "disk_full_error",
    "file_sha256",
    "is_disk_full",
    "json_default",
    "load_yaml",
    "move_file",
    "stable_hash",
    "temp_path",
]


def temp_path(path: str | Path, suffix: str = "") -> Path:
    """The hidden temporary sibling ``.NAME.tmp[suffix]`` an output is written to before its rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object], *, suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a hidden temporary sibling, then rename it over ``path`` (atomic on a volume).

    Readers never see a half-written ``path``; on error the temporary file is removed and ``path`` is left
    as it was. ``suffix`` is appended to the temporary name for writers that choose a format (or append an
    extension) by the file name, e.g. ``".npz"`` for :func:`numpy.savez`.
    """
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc, path):
            raise disk_full_error(path) from exc
        raise
    return path


def is_disk_full(exc: BaseException, path: str | Path | None = None) -> bool:
    """Whether an error means the disk (or quota) is full: ``ENOSPC``/``EDQUOT`` or GDAL's message for it
    anywhere in the exception chain, or (given ``path``) an I/O error on a volume with less than 1 MiB free."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen).lower()
        if "no space left on device" in text or "disk quota exceeded" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    if path is not None and isinstance(exc, OSError):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(_mount_point(path)).free < 2**20
    return False


def _mount_point(path: str | Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def disk_full_error(path: str | Path, note: str = "") -> OutputError:
    """The one-line :class:`~rasterlearn.errors.OutputError` for a full disk while writing ``path``."""
    free = ""
    with contextlib.suppress(OSError):
        free = f" ({shutil.disk_usage(_mount_point(path)).free / 2**20:.0f} MiB free)"
    return OutputError(
        f"no space left on {_mount_point(path)}{free} while writing {path}; free some space (or write to "
        f"another disk) and run the command again{note}"
    )


def move_file(src: str | Path, dst: str | Path) -> Path:
    """Move ``src`` onto ``dst`` atomically, also across file systems.

    On one file system this is :func:`os.replace`. Across file systems the file is first copied to a hidden
    temporary name beside ``dst`` (on the target file system), then renamed over ``dst`` and ``src`` is
    removed, so ``dst`` never holds a partial copy.
    """
    src, dst = Path(src), Path(dst)
    try:
        os.replace(src, dst)
        return dst
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    src.unlink()
    return dst


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; ``fsync`` flushes it to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_write_json(
    path: str | Path,
    data: Any,
    *,
    indent: int | None = 2,
    default: Callable[[Any], Any] | None = None,
    fsync: bool = False,
) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (``default`` as in :func:`json.dumps`)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=default), fsync=fsync)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (never constructs Python objects).

    Raises:
        ConfigError: invalid YAML, or Python tags (``!!python/object...``), named with the file and line.
    """
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "python/" in str(exc):
            problem = "Python tags (!!python/...) are not allowed in configuration files; use plain values"
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from exc


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays as Python numbers and lists, anything else as text."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def stable_hash(value: Any, *arrays: np.ndarray | None, length: int = 16) -> str:
    """Hex SHA-256 of ``value`` as sorted-key JSON (other objects as text), then the bytes of ``arrays``.

    ``None`` arrays are skipped. Used for parameter fingerprints, so the encoding must never change: a
    different digest would make earlier runs look different and stop them from resuming.
    """
    h = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode())
    for arr in arrays:
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:length]


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies an input file in a parameter fingerprint: absolute path, size and modification time.

    Cheap (one ``stat``); a changed file gets a new fingerprint, so a cached result is never reused for it.
    """
    if is_virtual(path):
        return _virtual_identity(str(path))
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_virtual(path: object) -> bool:
    """True for a GDAL virtual path (``/vsi…/``) or a URL: something ``pathlib`` must not normalise."""
    s = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return s.startswith("/vsi") or "://" in s


def _virtual_identity(path: str) -> dict[str, Any]:
    """Identity of a URL or ``/vsi`` path: the path, plus size/ETag/Last-Modified for an HTTP(S) URL.

    For HTTP(S) one ``HEAD`` request gives what the server says identifies the content; other handlers
    (``/vsis3/``, ``/vsizip/`` ...) are identified by their path alone, so a changed object under the same
    key is not detected — rerun with ``--no-resume`` after replacing remote data. A ``/vsimem/`` file is
    identified by its file name (GDAL places it under a random folder; rasterlearn's in-memory STAC stacks
    are named by a hash of their content).
    """
    if path.startswith("/vsimem/"):  # an in-memory file lives under a random folder: its name identifies it
        return {"vsimem": path.rsplit("/", 1)[-1]}
    url = path.removeprefix("/vsicurl/")
    out: dict[str, Any] = {"path": path}
    if url.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as resp:
                for key in ("Content-Length", "ETag", "Last-Modified"):
                    if resp.headers.get(key):
                        out[key.lower()] = resp.headers[key]
        except OSError:  # unreachable here: the reader reports it with the fix
            pass
    return out
