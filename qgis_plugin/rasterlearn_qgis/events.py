"""Parsing the rasterlearn CLI's ``--progress json`` event lines (pure Python, no QGIS).

Every line the CLI writes to stderr under ``--progress json`` is one JSON object with ``"v": 1``, ``"event"``
and ``"time"``; events are ``started``, ``phase``, ``progress``, ``log``, ``finished``, ``failed`` and
``cancelled`` (see docs/qgis.md). Lines that are not such objects (a command without ``--progress``, a
library printing to stderr) are kept as plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EVENT_TYPES", "ProgressState", "parse_event"]

EVENT_TYPES = frozenset({"started", "phase", "progress", "log", "finished", "failed", "cancelled"})


def parse_event(line: str) -> dict[str, Any] | None:
    """The event object of one stderr line, or ``None`` when the line is not a version-1 event."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("v") != 1 or obj.get("event") not in EVENT_TYPES:
        return None
    return obj


@dataclass
class ProgressState:
    """Folds events into what a front end shows: percent of the current phase, phase name, outcome."""

    job: str | None = None
    phase: str | None = None
    phase_index: int = 0
    total: int | None = None
    done: int = 0
    percent: float = 0.0
    outcome: str | None = None  # finished | failed | cancelled
    message: str = ""
    exit_code: int | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)

    def update(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "started":
            self.job = ev.get("job")
            self.total = ev.get("total")
            self.done, self.percent = 0, 0.0
        elif kind == "phase":
            self.phase = ev.get("phase")
            self.phase_index = int(ev.get("index") or 0)
            self.total = ev.get("total")
            self.done, self.percent = 0, 0.0
        elif kind == "progress":
            self.done = int(ev.get("done") or 0)
            self.total = ev.get("total", self.total)
            self.phase = ev.get("phase") or self.phase
            frac = ev.get("fraction")
            if frac is None and self.total:
                frac = self.done / self.total
            if frac is not None:
                self.percent = max(0.0, min(100.0, 100.0 * float(frac)))
        elif kind == "log":
            self.logs.append((str(ev.get("level", "info")), str(ev.get("message", ""))))
        elif kind == "finished":
            self.outcome, self.message, self.percent = "finished", str(ev.get("message") or ""), 100.0
        elif kind == "failed":
            self.outcome, self.message = "failed", str(ev.get("message") or "")
            self.exit_code = ev.get("exit_code")
        elif kind == "cancelled":
            self.outcome, self.message = "cancelled", str(ev.get("message") or "")
