"""One event stream for every long job, and one cancellation token.

A job (a CLI command, a pipeline stage, a QGIS Processing run) reports what it does as typed events sent to
one callback: :class:`Started` (with the total work of its first phase), :class:`Phase`, :class:`Progress`
(cumulative work done in the phase), :class:`Log`, and one of :class:`Finished`, :class:`Failed` or
:class:`Cancelled`. Front ends render them: the CLI as rich progress bars, ``--progress json`` as JSON lines
on stderr (schema in ``docs/events.md``), the QGIS plugin as its progress bar and log.

Library stages keep their small ``progress(n)`` callbacks, called between blocks where stopping is safe
(resumable state committed). :meth:`Monitor.phase` returns such a callback: it counts, emits throttled
:class:`Progress` events and checks the :class:`CancelToken`, raising :class:`~rasterlearn.errors.JobCancelledError`
once a front end asked the job to stop. A stage that learns its true total only after planning (an AOI
clips the work) announces it with :func:`report_total`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rasterlearn.errors import JobCancelledError

__all__ = [
    "SCHEMA_VERSION",
    "CancelToken",
    "Cancelled",
    "Event",
    "EventCallback",
    "Failed",
    "Finished",
    "Log",
    "Monitor",
    "Phase",
    "PhaseProgress",
    "Progress",
    "Started",
    "report_total",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Event:
    """Base of every event: ``event`` names the kind, ``time`` is unix seconds."""

    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``--progress json``: ``{"v": 1, "event": kind, "time": ..., fields...}``."""
        return {"v": SCHEMA_VERSION, "event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Started(Event):
    job: str
    total: int | None = None
    unit: str = ""


@dataclass(frozen=True)
class Phase(Event):
    phase: str
    total: int | None = None
    unit: str = ""
    index: int = 0


@dataclass(frozen=True)
class Progress(Event):
    done: int
    total: int | None = None
    fraction: float | None = None
    phase: str = ""


@dataclass(frozen=True)
class Log(Event):
    level: Literal["debug", "info", "warning", "error"]
    message: str
    logger: str = "rasterlearn"


@dataclass(frozen=True)
class Finished(Event):
    message: str = ""


@dataclass(frozen=True)
class Failed(Event):
    message: str
    exit_code: int = 2


@dataclass(frozen=True)
class Cancelled(Event):
    message: str = ""


EventCallback = Callable[[Event], None]


class CancelToken:
    """Set by a front end (a signal handler, a Cancel button); checked by jobs between blocks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`~rasterlearn.errors.JobCancelledError` when cancellation was asked for."""
        if self._event.is_set():
            raise JobCancelledError(
                f"{self.reason or 'Cancelled'}: stopped between blocks; resumable state kept, "
                "run the same command again to resume"
            )


class PhaseProgress:
    """The ``progress(n)`` callback of one phase: counts, emits throttled events, checks cancellation."""

    def __init__(self, monitor: Monitor, name: str, total: int | None) -> None:
        self._monitor = monitor
        self.name = name
        self.total = total
        self.done = 0
        self._last_emit = -math.inf  # the first count is always shown
        self._lock = threading.Lock()

    def __call__(self, n: float = 1, total: float | None = None) -> None:
        if total is not None:
            self.set_total(int(total))
        with self._lock:
            self.done += int(n)
            now = time.monotonic()
            finished = self.total is not None and self.done >= self.total
            emit = finished or now - self._last_emit >= self._monitor.min_interval
            if emit:
                self._last_emit = now
                self._monitor.emit(self._progress_event())
        self._monitor.token.check()

    def set_total(self, total: int) -> None:
        """Announce (or correct) the phase's total, e.g. once an AOI has clipped the work."""
        if total != self.total:
            self.total = total
            self._monitor.emit(self._progress_event())

    def _progress_event(self) -> Progress:
        frac = None if not self.total else min(1.0, self.done / self.total)
        return Progress(done=self.done, total=self.total, fraction=frac, phase=self.name)


class Monitor:
    """Turns a job's phases and counts into events for one callback, and holds its cancellation token."""

    def __init__(
        self,
        job: str,
        callback: EventCallback | None = None,
        token: CancelToken | None = None,
        min_interval: float = 0.2,
    ) -> None:
        self.job = job
        self.callback = callback
        self.token = token or CancelToken()
        self.min_interval = min_interval
        self.phases: list[PhaseProgress] = []

    def emit(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)

    def phase(self, name: str, total: int | None = None, unit: str = "") -> PhaseProgress:
        """Start a phase (the first one also announces the job) and return its ``progress(n)`` callback."""
        self.token.check()
        if not self.phases:
            self.emit(Started(job=self.job, total=total, unit=unit))
        self.emit(Phase(phase=name, total=total, unit=unit, index=len(self.phases)))
        ph = PhaseProgress(self, name, total)
        self.phases.append(ph)
        return ph


def report_total(progress: Callable[..., Any] | None, total: int) -> None:
    """Tell a ``progress`` callback the true total of its phase, when it can take one (see :class:`PhaseProgress`)."""
    set_total = getattr(progress, "set_total", None)
    if callable(set_total):
        set_total(int(total))
