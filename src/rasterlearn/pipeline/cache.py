"""The stage cache: canonical parameter hashes, input identities and ``stage.json`` records."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rasterlearn._util import atomic_write_json
from rasterlearn.engine import journal
from rasterlearn.engine.journal import Decision
from rasterlearn.errors import OutputError

# one logger for the whole package, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.pipeline")


STAGE_FILE = "stage.json"
RUN_FORMAT = "rasterlearn-run/1"
# the journal's decision cause -> the stage's state (StageCache.state)
_STATES: dict[str, Literal["complete", "partial", "stale", "new"]] = {
    "new": "new",
    "complete": "complete",
    "interrupted": "partial",
    "raised": "partial",
    "changed": "stale",
    "lowered": "stale",
    "foreign": "stale",
}


def canonical_hash(params: Any) -> str:
    """A 16-hex-digit hash of canonical JSON (sorted keys, paths as strings, 2.0 == 2): the journal's
    fingerprint in its ``normalize`` encoding (:func:`rasterlearn.engine.journal.fingerprint`)."""
    return journal.fingerprint(params, normalize=True)


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
        """The stage's state for ``stage_hash``: the journal's decision (:meth:`decide`) without its log line."""
        return _STATES.get(self._decision(name, stage_hash).cause, "stale")

    def decide(
        self,
        name: str,
        stage_hash: str,
        *,
        forced: bool = False,
        extend: tuple[str, float] | None = None,
    ) -> Decision:
        """Skip, resume or (re)run stage ``name`` (:func:`rasterlearn.engine.journal.decide`, logged at
        ``-v``): ``forced`` re-runs a complete stage; ``extend`` is ``(key, value)`` of a parameter recorded
        beside the hash that a finished stage can be extended by (``epochs``: raised resumes, lowered
        restarts)."""
        d = self._decision(name, stage_hash, None if forced else extend)
        if forced and d.action == "skip":
            d = Decision("restart", "forced", "forced")
        return journal.log_decision(f"stage {name}", d)

    def _decision(self, name: str, stage_hash: str, extend: tuple[str, float] | None = None) -> Decision:
        rec = self.record(name)
        folder = self.folder(name)
        if rec is None and folder.exists() and any(folder.iterdir()):
            return Decision("restart", f"{folder} holds files but no {STAGE_FILE}", "foreign")
        before = None
        if extend is not None and rec is not None and rec.params.get(extend[0]) is not None:
            before = int(rec.params[extend[0]])
        return journal.decide(
            f"stage {name}",
            stage_hash,
            None if rec is None else rec.hash,
            complete=rec is not None and rec.status == "complete",
            extend=None if extend is None else (extend[0], before, extend[1]),
            quiet=True,
        )

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
        rec = StageRecord(
            name, stage_hash, "running", params=journal.canonical(params), started=_now(), runs=runs
        )
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
        rec.outputs = journal.canonical(outputs)
        rec.summary = journal.canonical(summary or {})
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
