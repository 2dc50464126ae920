"""The typer application, global options, logging set-up and error handling."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from rasterlearn import __version__
from rasterlearn.errors import JobCancelledError, RasterlearnError

__all__ = ["app", "console", "main", "state"]

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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: runs the app and turns library errors into a message and exit code 2.

    Usage errors are reported by typer/click (exit code 2); library errors print their message without a
    traceback (with ``-v``, with one).
    """
    from rasterlearn.cli._progress import end_job

    console.quiet = False  # set again by -q for this invocation
    try:
        args = _global_options_first(list(argv) if argv is not None else sys.argv[1:])
        state["argv"] = args  # read by --config to report a bad file as a JSON event with --progress json
        app(args=args, prog_name="rasterlearn")
    except SystemExit as exc:
        code = exc.code
        code = code if isinstance(code, int) else (0 if code is None else 1)
        end_job(code)
        return code
    except (JobCancelledError, KeyboardInterrupt) as exc:
        json_mode = state.get("progress") == "json"
        end_job(exc)
        if not json_mode:
            console.print(f"[bold yellow]Cancelled:[/] {exc or 'interrupted'}", highlight=False)
        return 130
    except RasterlearnError as exc:
        json_mode = state.get("progress") == "json"
        console.quiet = False  # errors are printed whatever -q says
        if state.get("verbosity", 0) > 0:
            console.print_exception()
        end_job(exc)
        if not json_mode:
            console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)  # one line
        return 2
    except BaseException:
        end_job(None)
        raise
    end_job(0)
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
