"""Running the rasterlearn CLI out of process (pure Python, no QGIS): events, cancellation, errors.

:func:`run_cli` starts the command in its own process group, reads stderr line by line on a thread
(``--progress json`` events, or plain text), calls ``on_event`` / ``on_text`` from the calling thread, polls
``is_cancelled`` and on cancellation sends SIGTERM (the CLI stops at the next block boundary, keeps its
resumable state and exits 130), then kills the whole process group if it has not ended within
``grace_s`` seconds.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import ProgressState, parse_event

__all__ = ["CANCELLED_EXIT_CODE", "RunResult", "error_message", "run_cli", "supports_progress_json"]

CANCELLED_EXIT_CODE = 130


@dataclass
class RunResult:
    """How a CLI run ended."""

    returncode: int
    cancelled: bool
    state: ProgressState
    stdout: str
    stderr_text: list[str] = field(default_factory=list)
    killed: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled


def error_message(result: RunResult) -> str:
    """The one-line message to show for a failed run: the ``failed`` event's, else the CLI's ``Error:`` line,
    else the last lines of stderr."""
    if result.state.outcome == "failed" and result.state.message:
        return result.state.message
    lines = [s.strip() for s in result.stderr_text]
    starts = [i for i, s in enumerate(lines) if s.startswith("Error:")]
    if starts:  # a message a narrow console wrapped over several lines is joined again
        return " ".join(s for s in lines[starts[-1] :] if s)[len("Error:") :].strip()
    tail = [s.strip() for s in result.stderr_text if s.strip()][-3:]
    detail = " | ".join(tail) if tail else "no message"
    return f"rasterlearn exited with code {result.returncode}: {detail}"


def _popen_kwargs() -> dict[str, Any]:
    if sys.platform == "win32":  # pragma: no cover - Windows
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def _terminate(proc: subprocess.Popen[str]) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows
        proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
    else:
        proc.send_signal(signal.SIGTERM)


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    try:
        if sys.platform == "win32":  # pragma: no cover - Windows
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], check=False, capture_output=True)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_cli(
    command: Sequence[str],
    *,
    on_event: Callable[[dict[str, Any], ProgressState], None] | None = None,
    on_text: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    grace_s: float = 5.0,
    poll_s: float = 0.1,
) -> RunResult:
    """Run ``command`` (an argument list, never a shell string) and follow its events until it ends."""
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.setdefault("PYTHONIOENCODING", "utf-8")
    full_env.setdefault("COLUMNS", "400")  # rich wraps plain-text messages at the console width
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=full_env,
        cwd=cwd,
        **_popen_kwargs(),
    )
    lines: queue.Queue[str | None] = queue.Queue()
    out_chunks: list[str] = []

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    def read_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    threads = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
    for t in threads:
        t.start()
    state = ProgressState()
    text: list[str] = []
    cancelled = killed = False
    term_at: float | None = None
    eof = False
    while True:
        if not cancelled and is_cancelled():
            cancelled, term_at = True, time.monotonic()
            _terminate(proc)
        if (
            term_at is not None
            and not killed
            and proc.poll() is None
            and time.monotonic() - term_at > grace_s
        ):
            _kill_tree(proc)
            killed = True
        try:
            line = lines.get(timeout=poll_s)
        except queue.Empty:
            if eof and proc.poll() is not None:
                break
            continue
        if line is None:
            eof = True
            continue
        ev = parse_event(line)
        if ev is None:
            if line.strip():
                text.append(line.rstrip("\n"))
                if on_text is not None:
                    on_text(line.rstrip("\n"))
            continue
        state.update(ev)
        if on_event is not None:
            on_event(ev, state)
    rc = proc.wait()
    for t in threads:
        t.join(timeout=5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if rc == CANCELLED_EXIT_CODE or state.outcome == "cancelled":
        cancelled = True
    return RunResult(rc, cancelled, state, "".join(out_chunks), text, killed)


_PROBED: dict[tuple[str, float], bool] = {}


def supports_progress_json(executable: str, command: str = "cluster") -> bool:
    """Whether this rasterlearn accepts ``--progress json`` (older versions do not); probed once per
    executable (and its modification time) with ``rasterlearn COMMAND --help``."""
    try:
        key = (executable, os.path.getmtime(executable))
    except OSError:
        key = (executable, 0.0)
    if key not in _PROBED:
        try:
            out = subprocess.run(
                [executable, command, "--help"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env={**os.environ, "COLUMNS": "200"},
            )
            _PROBED[key] = "--progress" in out.stdout
        except (OSError, subprocess.TimeoutExpired):
            _PROBED[key] = False
    return _PROBED[key]
