"""Output safety shared by every stage: an output never resolves to an input, one run per output at a time.

:func:`check_outputs` is called at the start of each stage function, *before anything is read or written*:
an output that is one of the inputs (same path, a symlink to it, a hard link of it), an input's side file
(``IMG.tif.aux.xml``, ``IMG.qml``, ``IMG.tif.ovr``, a Shapefile's ``.dbf``, ...), or a file
inside an input folder (a model package, a chips dataset) is refused with an :class:`OutputError` naming
both paths. ``overwrite`` never changes that.

:func:`output_lock` guards an output against a second, concurrent run: it creates ``.NAME.lock`` beside the
output holding the owner's pid, host, command and start time. A second run refuses with that information.
A lock left by a dead process on this host (``kill -9``, power loss) is taken over with a log line. Locks
are re-entrant within one process, so a stage may hold the lock of its output while its
:class:`~rasterlearn.io.writer.BlockWriter` takes it again.

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from rasterlearn.errors import OutputError
from rasterlearn.io.remote import is_virtual

__all__ = ["check_outputs", "lock_path", "output_lock", "side_files"]

log = logging.getLogger(__name__)

PathLike = str | Path

# side files GDAL/QGIS/OGR and rasterlearn keep beside a file: name + suffix ...
_APPENDED = (".aux.xml", ".ovr", ".msk", ".model", ".lock")
# ... and name with its extension replaced
_REPLACED = (".qml", ".aux.xml", ".tfw", ".wld", ".prj", ".dbf", ".shx", ".cpg", ".sbn", ".sbx")


def side_files(path: PathLike) -> list[Path]:
    """The side files that belong to ``path``: ``path.aux.xml``, ``path.ovr``, ``stem.qml``, ``stem.dbf``, ...

    These are the files GDAL, QGIS and rasterlearn read or write beside a raster or vector file (see
    ``docs/safety.md``); an output must never be one of an input's side files.
    """
    p = Path(path)
    out = [p.with_name(p.name + s) for s in _APPENDED]
    out += [p.with_suffix(s) for s in _REPLACED if p.suffix and p.suffix != s]
    out.append(p.with_name(f".{p.name}.lock"))
    return out


def _real(path: Path) -> Path:
    """Absolute path with symlinks resolved (also for a path that does not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _same_file(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _clash(output: Path, inp: Path) -> str | None:
    """Why writing ``output`` would touch input ``inp`` (None when it would not)."""
    if _same_file(output, inp):
        if Path(os.path.abspath(output)) == Path(os.path.abspath(inp)):
            return "is"
        if _real(output) == _real(inp):
            return "is (through a symbolic link)"
        return "is (a hard link of)"
    real_out = _real(output)
    if any(real_out == _real(s) for s in side_files(inp)):
        return "is a side file of"
    if any(_real(s) == _real(inp) for s in _written_side_files(output)):
        return "would replace, as one of its side files,"
    if inp.is_dir() and output.is_file() and real_out.is_relative_to(_real(inp)):
        return "is a file of"
    return None


def _written_side_files(output: Path) -> list[Path]:
    """Side files rasterlearn's writers create or replace beside an output."""
    return [
        output.with_name(output.name + ".aux.xml"),
        output.with_suffix(".qml"),
        lock_path(output),
        output.with_name(f".{output.name}.partial.tif"),
        output.with_name(f".{output.name}.progress.json"),
    ]


def check_outputs(inputs: Iterable[object], outputs: Iterable[object]) -> None:
    """Refuse outputs that resolve to an input, whatever ``overwrite`` says; call it before reading.

    Compares every output with every input: the same path, a symlink or a hard link of it, one of the
    input's side files (:func:`side_files`), an input that is one of the side files the output's writer
    replaces (``OUT.tif.aux.xml``, ``OUT.qml``), or an existing file inside an input folder (a model package,
    a dataset). Entries that are not paths (``None``, a GeoDataFrame) and remote paths (``/vsi...``, URLs)
    are skipped.

    Raises:
        OutputError: naming the output, the input and how to fix it.
    """
    ins = [Path(p) for p in inputs if isinstance(p, str | os.PathLike) and not is_virtual(p)]
    for out in outputs:
        if not isinstance(out, str | os.PathLike) or is_virtual(out):
            continue
        o = Path(out)
        for inp in ins:
            how = _clash(o, inp)
            if how is not None:
                raise OutputError(
                    f"the output {o} {how} the input {inp}; writing it would destroy the input. "
                    f"Choose another output name (--overwrite never allows this)"
                )
        _refuse_if_locked(o)


def _refuse_if_locked(output: Path) -> None:
    """Refuse early when another live run holds ``output``'s lock (the writer takes the lock itself later)."""
    lock = lock_path(output)
    key = str(_real(lock))
    if key in _HELD or not lock.exists():
        return
    held = _read_lock(lock)
    if held and _stale(held, key) is None:
        raise OutputError(_held_message(output, lock, held))


# -- locks --------------------------------------------------------------------------------------------

_HELD: dict[str, int] = {}  # lock file -> re-entrancy depth in this process


def lock_path(output: PathLike) -> Path:
    """``.NAME.lock`` beside ``output`` (a file or a folder)."""
    p = Path(output)
    return p.with_name(f".{p.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _stale(info: dict[str, object], key: str) -> str | None:
    """Why a lock is stale (None when its holder may still run)."""
    if info.get("host") != socket.gethostname():
        return None  # another machine: we cannot tell, so it is held
    pid = info.get("pid")
    if not isinstance(pid, int):
        return "it names no process"
    if pid == os.getpid():
        return None if key in _HELD else "it was left by an earlier job of this process"
    if not _pid_alive(pid):
        return f"process {pid} is no longer running"
    return None


def _read_lock(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _acquire(output: Path, command: str | None) -> Path:
    lock = lock_path(output)
    key = str(_real(lock))
    if key in _HELD:
        _HELD[key] += 1
        return lock
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or shlex.join(["rasterlearn", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "output": str(output),
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_lock(lock)
            if not held and time.time() - _mtime(lock) < 5:
                time.sleep(0.2)  # being written by its creator right now
                held = _read_lock(lock)
            why = _stale(held, key) if held else "it is unreadable"
            if why is None:
                raise OutputError(_held_message(output, lock, held)) from None
            log.warning("Taking over the lock %s of %s: %s", lock, output, why)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        except FileNotFoundError:
            output.parent.mkdir(parents=True, exist_ok=True)  # folder outputs are created with parents
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        _HELD[key] = 1
        return lock
    raise OutputError(f"Could not lock {output} ({lock} keeps reappearing); is another run starting?")


def _held_message(output: Path, lock: Path, held: dict[str, object]) -> str:
    return (
        f"{output} is being written by another run (pid {held.get('pid')} on {held.get('host')}, "
        f"'{held.get('command')}', since {held.get('started')}); wait for it to finish or choose another "
        f"output. If that run is gone, delete {lock}"
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def release_lock(output: PathLike) -> None:
    """Release one level of this process's lock on ``output`` (removing the lock file at the last)."""
    lock = lock_path(output)
    key = str(_real(lock))
    depth = _HELD.get(key, 0)
    if depth > 1:
        _HELD[key] = depth - 1
        return
    _HELD.pop(key, None)
    if depth and _read_lock(lock).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def acquire_lock(output: PathLike, command: str | None = None) -> Path:
    """Take the lock of ``output`` (see :func:`output_lock`); pair with :func:`release_lock`."""
    return _acquire(Path(output), command)


@contextlib.contextmanager
def output_lock(output: PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``output`` while the block runs.

    The lock names this process (pid, host, command, start time). A second run on the same output raises
    :class:`OutputError` with that information; a lock whose process is dead (same host) is taken over with a
    warning. Re-entrant within a process.
    """
    lock = acquire_lock(output, command)
    try:
        yield lock
    finally:
        release_lock(output)
