"""The typer application, global options, logging set-up and error handling."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rasterlearn import __version__
from rasterlearn.errors import RasterlearnError

__all__ = ["app", "console", "main", "progress_bar", "state"]

console = Console(stderr=True)
app = typer.Typer(
    name="rasterlearn",
    help="Deep learning on geospatial rasters: labels to chips, training, seamless maps, foundation-model features.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

state: dict[str, Any] = {"verbosity": 0, "quiet": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rasterlearn {__version__}")
        raise typer.Exit()


def setup_logging(verbosity: int, quiet: bool) -> None:
    """Map ``-q``/``-v`` to logging levels: ERROR with -q, INFO by default (what was reprojected, repaired,
    resumed), DEBUG with -v (and tracebacks on errors)."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    root = logging.getLogger("rasterlearn")
    root.handlers.clear()
    handler = RichHandler(console=console, show_path=verbosity > 1, rich_tracebacks=True, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More output: -v debug details and tracebacks.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """rasterlearn command line."""
    state["verbosity"] = verbose
    state["quiet"] = quiet
    console.quiet = quiet  # -q: summaries, tables and bars off; main() still prints errors
    setup_logging(verbose, quiet)


@contextmanager
def progress_bar(description: str, total: float | None, unit: str = "") -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields a callback ``advance(n=1, total=None)`` for library progress hooks."""
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=state.get("quiet", False), transient=False) as prog:
        task = prog.add_task(description, total=total)

        def advance(n: float = 1, total: float | None = None) -> None:
            if total is not None:
                prog.update(task, total=total)
            prog.advance(task, n)

        yield advance


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: runs the app and turns library errors into a message and exit code 2.

    Usage errors are reported by typer/click (exit code 2); library errors print their message without a
    traceback (with ``-v``, with one).
    """
    console.quiet = False  # set again by -q for this invocation
    try:
        args = _global_options_first(list(argv) if argv is not None else sys.argv[1:])
        app(args=args, prog_name="rasterlearn")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except RasterlearnError as exc:
        console.quiet = False  # errors are printed whatever -q says
        if state.get("verbosity", 0) > 0:
            console.print_exception()
        console.print(f"[bold red]Error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130
    return 0


_GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "-vv", "-vvv"}


def _global_options_first(args: list[str]) -> list[str]:
    """Accept ``-q``/``-v`` anywhere (``rasterlearn vectorize MAP -o OUT -q``): move them before the command."""
    if "--" in args:
        head, tail = args[: args.index("--")], args[args.index("--") :]
    else:
        head, tail = args, []
    flags = [a for a in head if a in _GLOBAL_FLAGS]
    return [*flags, *[a for a in head if a not in _GLOBAL_FLAGS], *tail]


def entry() -> None:  # pragma: no cover - exercised by the installed script
    sys.exit(main())
