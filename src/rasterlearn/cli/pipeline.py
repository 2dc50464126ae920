"""``rasterlearn demo``, ``rasterlearn init`` and ``rasterlearn run``: whole runs from one command or one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._options import (
    FOLDER_OUTPUT,
    ProgressOpt,
    attribute_option,
    labels_option,
    out_folder_option,
    overwrite_option,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar, stage_progress

_UNITS = {"chips": "windows/chips", "train": "epochs", "predict": "pixels", "features": "tiles"}


def _print_run(res: Any) -> None:
    from rich.table import Table

    table = Table(title=f"rasterlearn run: {res.out}")
    for col in ("stage", "status", "hash", "seconds"):
        table.add_column(col)
    for name, rec in res.stages.items():
        status = "ran" if name in res.ran else "up to date"
        table.add_row(name, status, rec.hash, f"{rec.seconds or 0:.1f}" if name in res.ran else "-")
    console.print(table)
    metrics = {k: v for k, v in res.metrics().items() if isinstance(v, int | float)}
    if metrics:
        console.print("  ".join(f"{k} [bold]{v:.4f}[/]" for k, v in metrics.items()))
    if res.report:
        console.print(f"Report: [bold]{res.report}[/]")


@app.command(context_settings=FOLDER_OUTPUT)
def demo(
    out: Annotated[Path, out_folder_option("Output folder (report.html, maps, model, features).")] = Path(
        "rasterlearn-demo"
    ),
    raster: Annotated[
        Path | None, typer.Option("--raster", "-r", help="Your image instead of the synthetic scene.")
    ] = None,
    labels: Annotated[Path | None, labels_option("Your vector labels (with --raster).")] = None,
    attribute: Annotated[
        str | None, attribute_option("Class attribute of --labels (none: binary, class 1).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run: small scene, small chips, few epochs.")
    ] = False,
    size: Annotated[
        int | None,
        typer.Option(help="Synthetic scene size in pixels per side (default 768; 256 with --quick)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default 8).")] = None,
    seed: Annotated[int, seed_option("Synthetic scene seed.")] = 0,
    no_features: Annotated[
        bool, typer.Option("--no-features", help="Skip embed/PCA/k-means/similarity.")
    ] = False,
    unlabelled: Annotated[
        Literal["auto", "ignore", "background"],
        typer.Option(
            help="Pixels outside your label polygons: ignore (sparse polygons; default with --attribute), "
            "background (complete labels), or auto."
        ),
    ] = "auto",
    progress: ProgressOpt = "bar",
    change: Annotated[
        bool,
        typer.Option(
            "--change",
            help="Change detection instead: synthetic two-date scenes, multi-date chips, a siamese change "
            "model (20 epochs unless --epochs; about 10 minutes on a CPU), a change map with polygons, its "
            "accuracy, and a CVA change map to compare.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline on a synthetic scene (or your data) and write an HTML report.

    labels -> chips -> train -> predict (blended) -> evaluate -> vectorize -> embed -> PCA -> k-means ->
    similarity. Re-running skips finished stages; an interrupted demo resumes.
    """
    from rasterlearn.demo import run_demo

    if change:
        _change_demo(out, size=size or 256, seed=seed, epochs=epochs or (2 if quick else 20))
        return
    with stage_progress(_UNITS) as advance:
        res = run_demo(
            out,
            raster=raster,
            labels=labels,
            attribute=attribute,
            size=size or (256 if quick else 768),
            quick=quick,
            seed=seed,
            epochs=epochs,
            features=not no_features,
            progress=advance,
            unlabelled=unlabelled,
        )
    _print_demo(res)


def _print_demo(res: Any) -> None:
    """The demo's stages, outputs and headline scores, with a warning when a class or kappa is ~0."""
    if res.run is not None:
        _print_run(res.run)
    console.print()
    console.print(
        f"[bold]Outputs in {res.out.resolve()}[/]" + (" (synthetic scene)" if res.synthetic else "")
    )
    if res.report:
        console.print(f"  {'report':<20} {res.report}")
    for k, v in res.outputs.items():
        console.print(f"  {k:<20} {v}")
    m = res.metrics
    map_miou = m.get("scene_mean_iou")
    if map_miou is not None:
        low = m.get("scene_min_class_iou")
        console.print(
            f"Map mean IoU [bold]{map_miou:.3f}[/] (region: {m.get('scene_region')}), kappa "
            f"{_num(m.get('scene_kappa'))}, lowest class IoU {_num(low)}, overall accuracy "
            f"{_num(m.get('scene_overall_accuracy'))}"
        )
        if (low is not None and low < 0.01) or (m.get("scene_kappa") is not None and m["scene_kappa"] < 0.01):
            console.print(
                "[bold red]WARNING:[/] a class IoU or kappa is ~0: the overall accuracy is misleading; see "
                "the warnings at the top of the report."
            )
    if res.per_class_iou:
        console.print("IoU per class: " + ", ".join(f"{k} {v:.3f}" for k, v in res.per_class_iou.items()))
    if res.features_pretrained is False:
        console.print(
            "Features: backbone randomly initialised (no cached pretrained weights; nothing is downloaded)."
        )


@app.command()
def init(
    config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="Where to write the template.")],
    overwrite: Annotated[bool, overwrite_option("Replace an existing file.")] = False,
) -> None:
    """Write a commented run configuration template (edit it, then 'rasterlearn run CONFIG.yaml')."""
    from rasterlearn.pipeline import init_config

    path = init_config(config, overwrite=overwrite)
    console.print(f"Wrote {path}; edit the scenes and run 'rasterlearn run {path}'")


@app.command(context_settings=FOLDER_OUTPUT)
def run(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG.yaml", help="Run configuration (see 'rasterlearn init').")
    ],
    out: Annotated[Path | None, out_folder_option("Output folder (default: the config's 'out').")] = None,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="Only this stage and what it needs (repeatable).")
    ] = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Re-run this stage even if up to date.")
    ] = None,
    progress: ProgressOpt = "bar",
) -> None:
    """Run every stage of a config: chips, train, predict, evaluate, features, report (cached, resumable)."""
    from rasterlearn.pipeline import run_pipeline

    with stage_progress(_UNITS) as advance:
        res = run_pipeline(config, out=out, stages=stage or None, force=force or (), progress=advance)
    _print_run(res)


def _num(v: object) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]


def _change_demo(out: Path, *, size: int, seed: int, epochs: int) -> None:
    from rasterlearn.demo_change import run_change_demo

    with progress_bar("change demo", 5, "stages") as advance:
        res = run_change_demo(out, size=size, seed=seed, epochs=epochs, progress=advance)
    console.print(f"[bold]Outputs in {res.out.resolve()}[/] (synthetic two-date scenes)")
    for k, v in res.outputs.items():
        console.print(f"  {k:<20} {v}")
    for name, s in res.scores.items():
        console.print(
            f"{name}: change IoU [bold]{s['iou']:.3f}[/], F1 {s['f1']:.3f}, overall accuracy "
            f"{s['overall_accuracy']:.3f}"
        )
