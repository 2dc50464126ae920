"""How the CLI renders a job's events: rich progress bars, ``--progress json`` lines on stderr, or nothing.

Every long command takes ``--progress [bar|json|none]`` (:data:`ProgressOpt`). Its callback starts the job's
:class:`~rasterlearn.engine.events.Monitor` while the command line is parsed, so the command body only opens
phases with :func:`progress_bar`. SIGTERM and SIGINT set the job's cancellation token: the job stops at the
next block boundary with its resumable state kept (a second Ctrl-C interrupts at once). :func:`end_job`,
called by :func:`rasterlearn.cli._app.main`, emits the final event and restores the process state.

In JSON mode stderr carries only JSON lines (schema: ``docs/events.md``): log records become ``log`` events
and any other text written to ``sys.stderr`` (tables, library messages) becomes ``log`` events line by line.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import IO, Annotated, Any, Literal

import click
import typer

from rasterlearn.cli._app import console, state
from rasterlearn.engine.events import (
    Cancelled,
    Event,
    Failed,
    Finished,
    Log,
    Monitor,
    PhaseProgress,
    Progress,
)

__all__ = [
    "ProgressMode",
    "ProgressOpt",
    "announced_progress",
    "current_monitor",
    "end_job",
    "progress_bar",
    "stage_progress",
]

ProgressMode = Literal["bar", "json", "none"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}


class _JsonLines:
    """Writes events as JSON lines to the real stderr, one whole line at a time from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class _StderrAsEvents:
    """Stands in for ``sys.stderr`` in JSON mode: each text line written becomes a ``log`` event."""

    encoding = "utf-8"

    def __init__(self, emit: Callable[[Event], None], level: Literal["info", "warning"] = "info") -> None:
        self.emit = emit
        self.level = level
        self.buf = ""
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.buf += text
            *lines, self.buf = self.buf.split("\n")
        for line in lines:
            clean = _ANSI.sub("", line).rstrip()
            if clean.strip():
                self.emit(Log(level=self.level, message=clean, logger="stderr"))
        return len(text)

    def flush(self) -> None:
        if self.buf:
            self.write("\n")

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("not a real file")


class _EventLogHandler(logging.Handler):
    """rasterlearn's log records as ``log`` events (levels kept)."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        super().__init__()
        self.emit_event = emit

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else _LEVELS.get(record.levelno, "info")
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record must not kill the job
            msg = str(record.msg)
        self.emit_event(Log(level=level, message=msg, logger=record.name))  # type: ignore[arg-type]


class _BarRenderer:
    """Renders the current phase as one rich progress bar (count, rate, elapsed, remaining)."""

    def __init__(self) -> None:
        self.prog: Any = None
        self.task: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress) and self.prog is not None:
            self.prog.update(self.task, completed=event.done, total=event.total)


def _new_bar(description: str, total: int | None, unit: str) -> Any:
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text(f"- {unit}/s" if unit else "")
            if speed >= 1e5:
                return Text(f"{speed / 1e6:.2f} M{unit}/s")
            return Text(f"{speed:,.1f} {unit}/s" if speed < 10 else f"{speed:,.0f} {unit}/s")

    count = TextColumn(
        "{task.completed:,.0f}" + ("/{task.total:,.0f}" if total is not None else "") + f" {unit}"
    )
    columns = [
        SpinnerColumn() if total is None else TextColumn(""),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        count,
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, disable=state.get("quiet", False), transient=False)


def _signal_handler(monitor: Monitor) -> Callable[[int, Any], None]:
    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if monitor.token.cancelled and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        monitor.token.cancel(f"{name} received")
        logging.getLogger("rasterlearn").warning(
            "%s received: stopping at the next block boundary (resumable)%s",
            name,
            "; press Ctrl-C again to stop at once" if signum == signal.SIGINT else "",
        )

    return handle


def _start_job(ctx: click.Context, param: click.Parameter, mode: str) -> str:
    """``--progress`` callback: starts the command's job monitor before the command body runs."""
    if ctx.resilient_parsing:
        return mode
    end_job(None)  # a previous in-process job (tests, notebooks) left nothing behind
    job = ctx.info_name or "rasterlearn"
    saved: dict[str, Any] = {"stderr": sys.stderr, "showwarning": warnings.showwarning, "signals": {}}
    if mode == "json":
        sink: Callable[[Event], None] = _JsonLines(sys.stderr)
        root = logging.getLogger("rasterlearn")
        saved["handlers"] = list(root.handlers)
        root.handlers = [_EventLogHandler(sink)]
        sys.stderr = _StderrAsEvents(sink)
        saved["soft_wrap"] = console.soft_wrap
        console.soft_wrap = True  # one event per printed line, not per 80 columns

        def _warn(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            sink(Log(level="warning", message=f"{category.__name__}: {message}", logger="warnings"))

        warnings.showwarning = _warn
    elif mode == "bar":
        sink = _BarRenderer()
    else:
        sink = lambda event: None  # noqa: E731
    monitor = Monitor(job, sink)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError, OSError):
                saved["signals"][sig] = signal.signal(sig, _signal_handler(monitor))
    state.update(progress=mode, monitor=monitor, saved=saved)
    return mode


def current_monitor() -> Monitor:
    """The running command's monitor (a silent one when the command has no ``--progress`` option)."""
    monitor = state.get("monitor")
    if monitor is None:
        ctx = click.get_current_context(silent=True)
        monitor = Monitor(ctx.info_name if ctx and ctx.info_name else "rasterlearn")
        state["monitor"] = monitor
    return monitor


def end_job(outcome: BaseException | int | None) -> int | None:
    """Emit the job's final event for ``outcome`` (an exit code or an exception) and restore the process.

    Returns the exit code to use for a cancellation (130), else None.
    """
    from rasterlearn.errors import JobCancelledError, RasterlearnError

    monitor: Monitor | None = state.pop("monitor", None)
    saved: dict[str, Any] | None = state.pop("saved", None)
    mode = state.pop("progress", "bar")
    code: int | None = None
    if monitor is not None and outcome is not None:
        if isinstance(outcome, JobCancelledError | KeyboardInterrupt):
            msg = str(outcome) or "interrupted"
            monitor.emit(Cancelled(message=msg))
            code = 130
        elif isinstance(outcome, RasterlearnError):
            monitor.emit(Failed(message=str(outcome), exit_code=2))
        elif isinstance(outcome, int):
            if outcome == 0:
                monitor.emit(Finished())
            else:
                monitor.emit(Failed(message=f"exit code {outcome}", exit_code=outcome))
    if saved is not None:
        if isinstance(sys.stderr, _StderrAsEvents):
            sys.stderr.flush()
        sys.stderr = saved["stderr"]
        warnings.showwarning = saved["showwarning"]
        if "soft_wrap" in saved:
            console.soft_wrap = saved["soft_wrap"]
        if "handlers" in saved:
            logging.getLogger("rasterlearn").handlers = saved["handlers"]
        for sig, handler in saved["signals"].items():
            with suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
    if mode == "json" and code is None and isinstance(outcome, BaseException):
        return None
    return code


ProgressOpt = Annotated[
    ProgressMode,
    typer.Option(
        "--progress",
        callback=_start_job,
        help="Progress display: bar, json (JSON-line events on stderr, see docs/events.md) or none. "
        "SIGTERM/Ctrl-C stop the job between blocks, resumably.",
    ),
]


@contextmanager
def progress_bar(
    description: str, total: float | None, unit: str = "", display: bool = True
) -> Iterator[PhaseProgress]:
    """Open a phase of the running job; yields its ``progress(n)`` callback for a library call.

    The callback emits ``progress`` events (a bar in ``bar`` mode, JSON lines in ``json`` mode) and raises
    :class:`~rasterlearn.errors.JobCancelledError` at the next call after SIGTERM/Ctrl-C. ``display=False`` keeps
    the events without drawing a bar (a library draws its own).
    """
    monitor = current_monitor()
    renderer = monitor.callback if isinstance(monitor.callback, _BarRenderer) else None
    tot = None if total is None else int(total)
    if renderer is None or not display:
        yield monitor.phase(description, tot, unit)
        return
    with _new_bar(description, tot, unit) as prog:
        renderer.prog, renderer.task = prog, prog.add_task(description, total=tot)
        try:
            yield monitor.phase(description, tot, unit)
        except BaseException:
            if not prog.tasks[0].completed:  # refused before any work: the error alone, no empty bar
                prog.remove_task(renderer.task)
                prog.live.transient = True  # nor the blank line an emptied display leaves
                prog.live.stop()
                prog.disable = True
            raise
        finally:
            renderer.prog = None


@contextmanager
def stage_progress(units: dict[str, str]) -> Iterator[Callable[[str, int], None]]:
    """``advance(stage, n)`` for whole runs: each new stage opens a phase (without a total)."""
    phases: dict[str, PhaseProgress] = {}
    stack: list[Any] = []
    try:

        def advance(stage: str, n: int) -> None:
            if stage not in phases:
                if stack:
                    stack.pop().__exit__(None, None, None)
                cm = progress_bar(stage, None, units.get(stage, ""))
                phases[stage] = cm.__enter__()
                stack.append(cm)
            phases[stage](n)

        yield advance
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)


class _AnnouncedPhase:
    """A ``progress(n)`` callback whose phase opens when the library announces the total
    (:func:`rasterlearn.engine.events.report_total`), so the bar and the ``started`` event carry it."""

    def __init__(self, stack: ExitStack, job: str, unit: str) -> None:
        self.stack, self.job, self.unit = stack, job, unit
        self.phase: PhaseProgress | None = None

    def set_total(self, total: int) -> None:
        if self.phase is None:
            self.phase = self.stack.enter_context(progress_bar(self.job, total, self.unit))
        else:
            self.phase.set_total(total)

    def __call__(self, n: float = 1, total: float | None = None) -> None:
        if self.phase is None:
            self.phase = self.stack.enter_context(progress_bar(self.job, total, self.unit))
        self.phase(n, total)


@contextmanager
def announced_progress(job: str, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A phase of the running job opened at the library's first word: the total it announces (a stage
    function's :func:`~rasterlearn.engine.events.report_total`) or its first count. Nothing is shown when the
    library fails before either."""
    with ExitStack() as stack:
        yield _AnnouncedPhase(stack, job, unit)
