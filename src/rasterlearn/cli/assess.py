"""``rasterlearn sample`` and ``rasterlearn assess``: probability samples of a map and accuracy/area
estimates from them (Olofsson et al. 2013, 2014; Stehman 2014)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._options import (
    OverwriteOpt,
    ProgressOpt,
    blocksize_option,
    layer_option,
    output_option,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar
from rasterlearn.errors import InputError

MapArg = Annotated[
    Path, typer.Argument(metavar="MAP", help="Class map (single band of integer class codes).")
]
_BlocksizeOpt = Annotated[int, blocksize_option("Processing block (pixels per side).")]


def parse_expected_ua(text: str) -> float | dict[int, float]:
    """``"0.8"`` → 0.8; ``"0.9,1=0.7,3=0.6"`` → ``{-1: 0.9, 1: 0.7, 3: 0.6}`` (-1: the default)."""
    out: dict[int, float] = {}
    try:
        for item in (p.strip() for p in text.split(",") if p.strip()):
            if "=" in item:
                code, value = item.split("=", 1)
                out[int(code)] = float(value)
            else:
                out[-1] = float(item)
    except ValueError as exc:
        raise InputError(
            f"--expected-ua takes a number or CODE=VALUE items, e.g. '0.8' or '0.9,1=0.7'; got {text!r}"
        ) from exc
    if not out:
        raise InputError(f"--expected-ua is empty: {text!r}")
    return out[-1] if list(out) == [-1] else out


def _pixels(path: Path) -> int:
    from rasterlearn.io.raster import RasterReader

    with RasterReader(path, [1]) as r:
        return r.grid.height * r.grid.width


@app.command("sample")
def sample_cmd(
    map_path: MapArg,
    output: Annotated[Path, output_option("Sample points (.gpkg with the design; or .geojson/.fgb/.shp).")],
    design: Annotated[
        Literal["stratified", "random", "systematic"],
        typer.Option(
            help="stratified random (strata = map classes or --strata), simple random, or systematic."
        ),
    ] = "stratified",
    n: Annotated[
        int | None,
        typer.Option("--n", help="Total sample size; default: from --target-se and --expected-ua (eq. 13)."),
    ] = None,
    allocation: Annotated[
        Literal["proportional", "equal", "neyman"],
        typer.Option(help="Stratified: how n is split among strata."),
    ] = "proportional",
    min_per_class: Annotated[
        int,
        typer.Option(help="Stratified: at least this many samples per stratum (2: the variance needs two)."),
    ] = 2,
    target_se: Annotated[
        float, typer.Option(help="Target standard error of overall accuracy for the computed sample size.")
    ] = 0.01,
    expected_ua: Annotated[
        str, typer.Option(help="Expected user's accuracy: '0.8', or per code '0.9,1=0.7,3=0.6'.")
    ] = "0.8",
    strata: Annotated[
        Path | None,
        typer.Option(help="Strata raster on the map's grid, when strata differ from the map classes."),
    ] = None,
    seed: Annotated[int, seed_option("Random seed (same seed, same sample).")] = 0,
    reference_field: Annotated[
        str, typer.Option(help="Name of the empty field for reference labels.")
    ] = "reference",
    blocksize: _BlocksizeOpt = 1024,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = "bar",
) -> None:
    """Draw a probability sample of a class map for accuracy assessment and area estimation."""
    from rasterlearn.assess.sample import draw_sample

    with progress_bar("sample", 2 * _pixels(map_path), "px") as advance:
        res = draw_sample(
            map_path,
            output,
            design=design,
            n=n,
            allocation=allocation,
            min_per_class=min_per_class,
            target_se=target_se,
            expected_ua=parse_expected_ua(expected_ua),
            strata=strata,
            seed=seed,
            reference_field=reference_field,
            blocksize=blocksize,
            overwrite=overwrite,
            progress=advance,
        )
    _print_design(res.design)
    console.print(
        f"Wrote {res.n} points to {res.path}; fill the {reference_field!r} field, then run rasterlearn assess"
    )


def _ua_text(ua: Any) -> str:
    if isinstance(ua, dict):
        return ", ".join(f"{'others' if int(k) == -1 else k}: {v}" for k, v in ua.items())
    return str(ua)


def _print_design(d: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        f"Sample size from Olofsson et al. (2014) eq. 13 (target SE of overall accuracy {d['target_se']}, "
        f"expected user's accuracy {_ua_text(d['expected_ua'])}): {d['n_eq13']}"
        + (f"; using --n {d['n_requested']}" if d["n_requested"] is not None else "")
    )
    how = f"{d['allocation']} allocation, minimum {d['min_per_class']}" if d["design"] == "stratified" else ""
    if d["design"] == "systematic":
        how = f"lattice step {d['step']} px, offset {d['offset']}"
    ha = d["hectares_per_unit2"] is not None
    table = Table(title=f"{d['design']} sample, {d['n']} points ({how or 'post-stratified by map class'})")
    for col in (
        "stratum",
        "code",
        "pixels",
        "area (ha)" if ha else f"area ({d['unit']})",
        "samples",
        "incl. prob.",
    ):
        table.add_column(col, justify="right")
    for s in d["strata"]:
        area = s["area_ha"] if ha else s["area"]
        table.add_row(
            s["name"],
            str(s["code"]),
            f"{s['pixels']:,}",
            f"{area:,.1f}",
            str(s["samples"]),
            f"{s['inclusion_probability']:.3g}",
        )
    console.print(table)


@app.command("assess")
def assess_cmd(
    map_path: MapArg,
    samples: Annotated[
        Path, typer.Option(help="Labelled sample points (from rasterlearn sample, or any point layer).")
    ],
    output: Annotated[Path, output_option("Assessment JSON (CSV, PNG, HTML beside it).")],
    reference_field: Annotated[
        str, typer.Option(help="Field with the reference class (name or code).")
    ] = "reference",
    layer: Annotated[str | None, layer_option("Point layer (default: 'samples', else the first).")] = None,
    design: Annotated[
        Path | None,
        typer.Option(help="Design JSON for samples whose file lost it (e.g. saved as Shapefile)."),
    ] = None,
    strata: Annotated[
        Path | None,
        typer.Option(
            help="Strata raster: the moved raster of a sample drawn with --strata, or the strata of a plain point "
            "layer (Stehman 2014)."
        ),
    ] = None,
    skip_unlabelled: Annotated[
        bool, typer.Option(help="Leave unlabelled points out (recorded) instead of stopping.")
    ] = False,
    confidence: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    fpc: Annotated[bool, typer.Option(help="Apply the finite population correction.")] = False,
    blocksize: _BlocksizeOpt = 1024,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = "bar",
) -> None:
    """Accuracy (OA, user's, producer's) and class areas with standard errors and confidence intervals."""
    from rasterlearn.assess.run import assess_sample

    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite or choose another name")
    with progress_bar("assess", _pixels(map_path), "px") as advance:
        result = assess_sample(
            map_path,
            samples,
            reference_field=reference_field,
            layer=layer,
            design=design,
            strata=strata,
            skip_unlabelled=skip_unlabelled,
            confidence=confidence,
            fpc=fpc,
            output=output,
            blocksize=blocksize,
            progress=advance,
        )
    _print_assessment(result)
    console.print(f"Wrote {output} (+ .csv, .png, .html)")


def _fmt(d: dict[str, Any] | None, digits: int = 3) -> str:
    if d is None or d.get("estimate") is None:
        return "-"
    return f"{d['estimate']:.{digits}f} ± {d['half_width']:.{digits}f}"


def _print_assessment(r: dict[str, Any]) -> None:
    from rich.table import Table

    ha = r["total_area_ha"] is not None
    oa = r["overall_accuracy"]
    table = Table(
        title=f"{r['n']} samples; overall accuracy {_fmt(oa)} ({r['confidence']:.0%} CI); {r['design']['design']} design"
    )
    unit = "ha" if ha else r["area_unit"]
    for col in ("class", "user's acc.", "producer's acc.", f"mapped ({unit})", f"estimated ({unit})"):
        table.add_column(col, justify="right")
    for name, c in r["per_class"].items():
        area = c["area_ha"] if ha else c["area"]
        table.add_row(
            name,
            _fmt(c["users_accuracy"]),
            _fmt(c["producers_accuracy"]),
            f"{(c['mapped_area_ha'] if ha else c['mapped_area']):,.1f}",
            "-"
            if area is None or area["estimate"] is None
            else f"{area['estimate']:,.1f} ± {area['half_width']:,.1f}",
        )
    console.print(table)
