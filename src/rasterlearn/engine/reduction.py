"""The resumable record of a job that *reduces* blocks to one result instead of writing raster blocks.

``evaluate`` sums a confusion matrix over windows, ``vectorize`` collects polygons window by window: there is
no partial raster to reopen, so what an interrupted run keeps is the running state itself. A
:class:`ReductionRecord` is that state's journal, the counterpart of the block writer's
(:class:`rasterlearn.io.writer.BlockWriter`): a hidden ``.NAME.progress.json`` beside the final output
holding

* ``fingerprint``: the job's :func:`rasterlearn.engine.journal.fingerprint`;
* ``done``: the keys of the committed blocks;
* ``state``: the stage's running state after those blocks (JSON data: whatever the stage folds).

Opening it asks :func:`rasterlearn.engine.journal.decide`: no record → ``start``; same fingerprint →
``resume`` from the recorded state; other fingerprint → ``restart`` (the reason logged at ``-v``); an
unreadable record → ``restart`` with a warning. The record is used as a context manager: entering takes
the output's lock and decides; :meth:`ReductionRecord.mark_done` takes a block's key with
the state that includes it and writes the record atomically at most every ``commit_every_s`` seconds (default 5);
leaving the ``with`` block by an exception (a :class:`~rasterlearn.errors.JobCancelledError` raised from a
progress callback) writes it once more, so a cancelled job keeps everything it folded.
:meth:`ReductionRecord.complete` removes the record once the final output is committed.

A stage calls its progress callback only after :meth:`~ReductionRecord.mark_done`: a cancel raised from the
callback then finds the block's contribution in the state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rasterlearn._util import atomic_write_text
from rasterlearn.engine.journal import Decision, decide, log_decision
from rasterlearn.io.paths import acquire_lock, release_lock

__all__ = ["ReductionRecord", "record_path"]

log = logging.getLogger(__name__)


def record_path(output: str | Path) -> Path:
    """Where the record of the job writing ``output`` lives: ``.NAME.progress.json`` beside it."""
    out = Path(output)
    return out.with_name(f".{out.name}.progress.json")


class ReductionRecord:
    """The running state of a block-reducing job, kept beside its output so a rerun resumes.

    Args:
        output: the job's final output (the record is ``.NAME.progress.json`` beside it); ``None``: the job
            writes nothing, so nothing is recorded (the record then only holds the state in memory).
        fingerprint: this run's fingerprint (:func:`rasterlearn.engine.journal.fingerprint`).
        initial: the state of a job with no block done (JSON data).
        resume: resume a recorded run of the same fingerprint (``False``: always start afresh).
        valid: checks a recorded state (``False`` or a ``KeyError``/``TypeError``/``ValueError``: the record
            is treated as unreadable and the job restarts).
        unit: what the blocks are called in the ``Resuming`` log line.
        commit_every_s: the time between two writes of the record while blocks are done (longer when a
            write takes more than a tenth of it: a large state).
    """

    def __init__(
        self,
        output: str | Path | None,
        fingerprint: str,
        initial: Any,
        *,
        resume: bool = True,
        valid: Callable[[Any], bool] | None = None,
        unit: str = "blocks",
        commit_every_s: float = 5.0,
    ) -> None:
        self.output = None if output is None else Path(output)
        self.path = None if output is None else record_path(output)
        self.fingerprint = fingerprint
        self.commit_every_s = float(commit_every_s)
        self._gap = self.commit_every_s
        self.state: Any = initial
        self._done: set[str] = set()
        self._pending: set[str] = set()
        self._last_commit = time.monotonic()
        self._open_args = (initial, resume, valid, unit)
        self.decision = Decision("start", "not opened", "new")

    def __enter__(self) -> ReductionRecord:
        """Take the output's lock (:func:`rasterlearn.io.paths.acquire_lock`: a second run on the same
        output refuses) and decide from the record what this run does."""
        initial, resume, valid, unit = self._open_args
        if self.output is not None:
            acquire_lock(self.output)
        try:
            self.decision = self._open(initial, resume, valid)
        except BaseException:
            self._release()
            raise
        if self.decision.action == "resume":
            log.info("Resuming %s: %d %s already done", self.output, len(self._done), unit)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is not None and self._pending:
                self.commit()  # cancelled or failed: keep what was folded (whole after every mark_done)
        except OSError as exc:  # the original exception is the one to report
            log.warning("Could not write the progress record %s: %s", self.path, exc)
        finally:
            self._release()

    def _release(self) -> None:
        if self.output is not None:
            release_lock(self.output)

    def _open(self, initial: Any, resume: bool, valid: Callable[[Any], bool] | None) -> Decision:
        job = str(self.output)
        if self.path is None or not self.path.exists():
            return decide(job, self.fingerprint, None, quiet=self.path is None)
        if not resume:
            return decide(job, self.fingerprint, "", resume=False)
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            done = [str(k) for k in record["done"]]
            state = record["state"]
            recorded = record["fingerprint"]
            if not isinstance(recorded, str) or (valid is not None and not valid(state)):
                raise ValueError("not a progress record")
        except (OSError, ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
            log.warning("Progress record %s is unreadable; starting %s afresh", self.path, self.output)
            return log_decision(job, Decision("restart", "progress record unreadable", "unreadable"))
        decision = decide(job, self.fingerprint, recorded, done=len(done))
        if decision.action == "resume":
            self._done, self.state = set(done), state
        else:
            self.state = initial
        return decision

    def is_done(self, key: str) -> bool:
        """Whether block ``key`` is folded into :attr:`state` (by an earlier or this run)."""
        return key in self._done or key in self._pending

    @property
    def done(self) -> frozenset[str]:
        """The keys of the blocks folded into :attr:`state`."""
        return frozenset(self._done | self._pending)

    def mark_done(self, key: str, state: Any) -> None:
        """Block ``key`` is folded: ``state`` is the running state that includes it. Writes the record when
        ``commit_every_s`` have passed since the last write."""
        self.state = state
        self._pending.add(key)
        if time.monotonic() - self._last_commit >= self._gap:
            self.commit()

    def commit(self) -> None:
        """Write the fingerprint, the done keys and the state atomically (nothing new: nothing written)."""
        if self.path is None or (not self._pending and self.path.exists()):
            return
        started = time.monotonic()
        done = self._done | self._pending
        record = {"fingerprint": self.fingerprint, "done": sorted(done), "state": self.state}
        atomic_write_text(self.path, json.dumps(record, separators=(",", ":")), fsync=True)
        self._done = done
        self._pending.clear()
        self._last_commit = time.monotonic()
        # a large state (many polygons) takes long to write: writing stays under a tenth of the run's time
        self._gap = max(self.commit_every_s, 10.0 * (self._last_commit - started))

    def complete(self) -> None:
        """The final output is committed: the record is no longer needed and is removed."""
        self._done |= self._pending
        self._pending.clear()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
