"""``rasterlearn evaluate``: a predicted class map against ground truth over the whole scene."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rasterlearn.cli._app import app, console, state
from rasterlearn.cli._config import stage_options
from rasterlearn.cli._metrics import print_metrics
from rasterlearn.cli._options import (
    ProgressOpt,
    SchedulerOpt,
    WorkersOpt,
    aoi_option,
    config_option,
    layer_option,
    output_option,
)
from rasterlearn.cli._progress import announced_progress
from rasterlearn.options import EvaluateOptions


@app.command()
def evaluate(
    ctx: typer.Context,
    map_path: Annotated[Path, typer.Argument(metavar="MAP", help="Predicted class map.")],
    truth: Annotated[Path, typer.Option(help="Ground truth: a vector layer or a label raster.")],
    output: Annotated[Path, output_option("Metrics JSON (CSV and PNG are written beside it).")],
    attribute: Annotated[
        str | None, typer.Option(help="Vector truth: the attribute holding the class.")
    ] = None,
    layer: Annotated[str | None, layer_option("Vector truth: layer name.")] = None,
    schema: Annotated[
        Path | None, typer.Option(help="Class schema (YAML/CSV) when the map has no class names.")
    ] = None,
    truth_classes: Annotated[
        Path | None,
        typer.Option(
            help="Names of the truth's class codes (schema YAML/CSV) when they differ from the map's codes: "
            "truth classes are matched to the map's by name."
        ),
    ] = None,
    truth_names: Annotated[
        str | None,
        typer.Option(
            help="Inline names of the truth's class codes, e.g. '1=developed,2=agriculture' (instead of "
            "--truth-classes)."
        ),
    ] = None,
    class_match: Annotated[
        Literal["auto", "name", "code"],
        typer.Option(
            help="How truth values meet map classes: 'name', 'code', or 'auto' (by name when truth names are "
            "given or the truth raster names its classes)."
        ),
    ] = "auto",
    unlabelled: Annotated[
        Literal["auto", "background", "ignore"],
        typer.Option(
            help="Vector truth: pixels outside every polygon are 'background', 'ignore', or 'auto' (background when the "
            "map has a background class)."
        ),
    ] = "auto",
    aoi: Annotated[str | None, aoi_option("Only pixels inside this vector layer / 'l,b,r,t' extent.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Comma list of extra truth values to ignore.")] = None,
    all_touched: Annotated[
        bool, typer.Option(help="Vector truth: burn every pixel a polygon touches.")
    ] = False,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(EvaluateOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Compare a predicted map with ground truth over the whole scene: confusion matrix, IoU, F1, kappa."""
    from rasterlearn import evaluate as stage

    options = stage_options(ctx, EvaluateOptions)
    with announced_progress("evaluate", "px") as advance:
        res = stage.run_evaluate(options, progress=advance)
    _print_metrics(res.metrics)
    console.print(f"Wrote {res.output} (+ .csv, .png)")


def _print_metrics(metrics: dict[str, Any]) -> None:
    from rasterlearn.diagnostics import collapse_warnings, log_warnings

    log_warnings(collapse_warnings(metrics, "map"))
    print_metrics(metrics)
    if state.get("verbosity", 0) > 0:
        console.print_json(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}))
