"""The stage cache: canonical parameter hashes, input identities and ``stage.json`` records."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from rasterlearn._util import atomic_write_json
from rasterlearn._util import file_identity as _stat_identity
from rasterlearn.errors import InputNotFoundError, OutputError

# one logger for the whole package, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.pipeline")


STAGE_FILE = "stage.json"
RUN_FORMAT = "rasterlearn-run/1"


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_hash(params: Any) -> str:
    """A 16-hex-digit hash of canonical JSON (sorted keys, paths as strings, 2.0 == 2)."""
    text = json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_identity(path: str | Path | None) -> dict[str, Any] | None:
    """Path, size and modification time of an input (changes when the file changes)."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"Input not found: {p}")
    return _stat_identity(p)


def _write_stage_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str, fsync=True)


@dataclass
class StageRecord:
    """What ``stage.json`` says about a stage."""

    name: str
    hash: str
    status: Literal["running", "complete"]
    params: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    runs: int = 1


class StageCache:
    """Stage folders ``root/<stage>/`` with a ``stage.json`` completion record.

    ``state(name, hash)`` is ``complete`` (same hash, finished: skip), ``partial`` (same hash, interrupted:
    resume), ``stale`` (another hash: clear and re-run) or ``new``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / name

    def record(self, name: str) -> StageRecord | None:
        p = self.folder(name) / STAGE_FILE
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return StageRecord(**{k: d[k] for k in StageRecord.__dataclass_fields__ if k in d})
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            log.warning("Unreadable %s (%s); the stage will be re-run", p, exc)
            return None

    def state(self, name: str, stage_hash: str) -> Literal["complete", "partial", "stale", "new"]:
        rec = self.record(name)
        folder = self.folder(name)
        if rec is None:
            return "stale" if folder.exists() and any(folder.iterdir()) else "new"
        if rec.hash != stage_hash:
            return "stale"
        return "complete" if rec.status == "complete" else "partial"

    def begin(self, name: str, stage_hash: str, params: dict[str, Any]) -> Path:
        """Prepare the folder (cleared when stale) and mark the stage as running."""
        folder = self.folder(name)
        state = self.state(name, stage_hash)
        rec = self.record(name)
        runs = 1
        if state == "stale":
            if rec is None and not self._owned(folder):
                raise OutputError(
                    f"{folder} exists but was not written by a rasterlearn run (no {STAGE_FILE}); "
                    f"choose another 'out' folder or remove it"
                )
            log.warning(
                "Stage %s: parameters changed (hash %s -> %s); clearing %s and running it again",
                name,
                rec.hash if rec else "?",
                stage_hash,
                folder,
            )
            shutil.rmtree(folder)
        elif state == "partial" and rec is not None:
            runs = rec.runs + 1
            why = "was reopened" if rec.finished else "was interrupted"  # reopened: see StageCache.reopen
            log.info("Stage %s %s; resuming it (attempt %d)", name, why, runs)
        folder.mkdir(parents=True, exist_ok=True)
        rec = StageRecord(name, stage_hash, "running", params=_canonical(params), started=_now(), runs=runs)
        _write_stage_json(folder / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})
        return folder

    def _owned(self, folder: Path) -> bool:
        return not folder.exists() or not any(folder.iterdir())

    def finish(
        self,
        name: str,
        outputs: dict[str, Any],
        summary: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> StageRecord:
        """Mark a running stage complete (atomic rewrite of ``stage.json``)."""
        rec = self.record(name)
        if rec is None:
            raise OutputError(f"Stage {name} was never begun in {self.root}")
        rec.status = "complete"
        rec.outputs = _canonical(outputs)
        rec.summary = _canonical(summary or {})
        rec.finished = _now()
        rec.seconds = seconds
        _write_stage_json(self.folder(name) / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})
        return rec

    def reopen(self, name: str) -> None:
        """Mark a complete stage as running again (its outputs kept): the next run of it resumes."""
        rec = self.record(name)
        if rec is None:
            raise OutputError(f"Stage {name} was never begun in {self.root}")
        rec.status = "running"
        _write_stage_json(self.folder(name) / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})

    def invalidate(self, name: str) -> None:
        """Forget a stage (its folder is removed)."""
        folder = self.folder(name)
        if folder.exists() and (folder / STAGE_FILE).exists():
            shutil.rmtree(folder)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
