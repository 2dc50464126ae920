"""``rasterlearn chips`` and ``rasterlearn analyze``: training chips from rasters + labels, and their analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rasterlearn.cli._app import app, console
from rasterlearn.cli._config import stage_options
from rasterlearn.cli._options import (
    FOLDER_OUTPUT,
    LayerOpt,
    ProgressOpt,
    attribute_option,
    config_file_option,
    config_option,
    image_option,
    labels_option,
    nodata_policy_option,
    out_folder_option,
    output_option,
    overwrite_option,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar
from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.options import ChipsOptions, describe_validation_error, parse_numbers

ChipsConfig = ChipsOptions  # the former name of the chips options model (rasterlearn.options)
_DEFAULT: dict[str, Any] = ChipsOptions.model_validate({}).model_dump(
    by_alias=True
)  # the CLI's defaults are the model's


def _load_config(path: Path | None, cli: dict[str, Any], model: type[BaseModel]) -> Any:
    """Config file values, overridden by options given on the command line (not None / not empty)."""
    from rasterlearn._util import load_yaml

    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise InputNotFoundError(f"Config file not found: {path}")
        loaded = load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of option names to values")
        data.update(loaded)
    for key, value in cli.items():
        if value is None or value == [] or (value is False and key in data):
            continue
        data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msgs = describe_validation_error(exc, model)
        raise ConfigError(f"Invalid options{f' in {path}' if path else ''}: {msgs}") from exc


# -- chips' options (the shared concepts come from cli/_options.py) ------------------------------------------
_ImageOpt = Annotated[
    list[Path] | None,
    image_option(
        "One raster per date of a multi-date scene, in time order (repeat: --image A --image B); later dates "
        "are resampled onto the first date's grid."
    ),
]
_NodataPolicyOpt = Annotated[
    str | None,
    nodata_policy_option("Multi-date scenes: all-valid (nodata in any date is nodata) or any-valid."),
]
_LabelsOpt = Annotated[
    list[Path] | None,
    labels_option("Vector labels for each --raster (repeat in pairs; one file is used for all rasters)."),
]
_AttributeOpt = Annotated[
    str | None,
    attribute_option("Class attribute of the labels (numbers or text); omitted = burn --burn-value."),
]
_OverwriteOpt = Annotated[bool, overwrite_option("Replace an existing dataset in --output.", negatable=False)]
_RasterOpt = Annotated[
    list[Path] | None, typer.Option("--raster", "-r", help="Image raster (repeat, paired with --labels).")
]
_LabelRasterOpt = Annotated[
    list[Path] | None,
    typer.Option("--label-raster", help="Pre-rasterized label raster instead of --labels (repeatable)."),
]
_ScenesOpt = Annotated[
    Path | None,
    typer.Option(
        "--scenes",
        help="Scenes CSV (geo-deep-learning layout: image, "
        "metadata, labels, attribute, split; or with a header).",
    ),
]
_BurnValueOpt = Annotated[int | None, typer.Option(help="Class code burned when there is no --attribute.")]
_StrideOpt = Annotated[int | None, typer.Option(help="Step between chips in pixels (default: --size).")]
_BandsOpt = Annotated[
    list[str] | None,
    typer.Option("--bands", "-b", help="Bands by 1-based index or description, e.g. '4,3,2' (repeatable)."),
]
_SchemaOpt = Annotated[
    Path | None,
    typer.Option(
        "--schema", help="Class schema YAML or colormap CSV (value,name,#RRGGBB); default: inferred."
    ),
]
_AllTouchedOpt = Annotated[bool, typer.Option("--all-touched", help="Burn every pixel a geometry touches.")]
_OverlapOpt = Annotated[
    str | None, typer.Option(help="Overlapping features: 'last' (file order wins) or 'priority'.")
]
_PriorityOpt = Annotated[
    str | None,
    typer.Option(help="Class codes from highest to lowest priority, e.g. '3,1,2' (with --overlap priority)."),
]
_LabelAreasOpt = Annotated[
    str | None,
    typer.Option(help="Label only inside: 'features', 'extent' or a polygon file; elsewhere ignore."),
]
_UnknownClassesOpt = Annotated[
    str | None, typer.Option(help="Label values not in the schema: 'error' or 'ignore'.")
]
_SplitMethodOpt = Annotated[
    str | None,
    typer.Option(
        help="auto | blocks | random | stratified | scene (auto = scene splits from the CSV, else blocks)."
    ),
]
_BlockSizeOpt = Annotated[
    int | None, typer.Option(help="Spatial split block size in pixels (default: 4 x size).")
]
_MinAnnotatedOpt = Annotated[
    float | None, typer.Option(help="Min percent of non-background labelled pixels per chip.")
]
_MaxNodataOpt = Annotated[float | None, typer.Option(help="Max percent of nodata pixels per chip.")]
_ClassProportionOpt = Annotated[str | None, typer.Option(help="Min percent per class, e.g. '1:5,2:10'.")]
_CompressOpt = Annotated[str | None, typer.Option(help="Chip compression: deflate | lzw | zstd | none.")]


@app.command(context_settings=FOLDER_OUTPUT)
def chips(
    ctx: typer.Context,
    raster: _RasterOpt = None,
    image: _ImageOpt = None,
    nodata_policy: _NodataPolicyOpt = _DEFAULT["nodata_policy"],
    labels: _LabelsOpt = None,
    label_raster: _LabelRasterOpt = None,
    scenes: _ScenesOpt = None,
    output: Annotated[Path | None, output_option("Dataset folder to write.")] = None,
    attribute: _AttributeOpt = None,
    burn_value: _BurnValueOpt = _DEFAULT["burn_value"],
    layer: LayerOpt = None,
    size: Annotated[int | None, typer.Option("--size", "-s", help="Chip size in pixels.")] = _DEFAULT["size"],
    stride: _StrideOpt = None,
    bands: _BandsOpt = None,
    schema: _SchemaOpt = None,
    ignore_index: Annotated[int | None, typer.Option(help="Ignore code in masks (default: 255).")] = None,
    all_touched: _AllTouchedOpt = False,
    overlap: _OverlapOpt = _DEFAULT["overlap"],
    priority: _PriorityOpt = None,
    label_areas: _LabelAreasOpt = None,
    unknown_classes: _UnknownClassesOpt = _DEFAULT["unknown_classes"],
    label_band: Annotated[int | None, typer.Option(help="Band of label rasters.")] = _DEFAULT["label_band"],
    split_method: _SplitMethodOpt = _DEFAULT["split_method"],
    val: Annotated[float | None, typer.Option(help="Validation fraction.")] = _DEFAULT["val"],
    test: Annotated[float | None, typer.Option(help="Test fraction.")] = _DEFAULT["test"],
    block_size: _BlockSizeOpt = None,
    min_annotated: _MinAnnotatedOpt = _DEFAULT["min_annotated"],
    max_nodata: _MaxNodataOpt = _DEFAULT["max_nodata"],
    class_proportion: _ClassProportionOpt = None,
    seed: Annotated[int | None, seed_option("Random seed of splits and statistics.")] = _DEFAULT["seed"],
    compress: _CompressOpt = _DEFAULT["compress"],
    overwrite: _OverwriteOpt = False,
    config: Annotated[Path | None, config_option(ChipsOptions)] = None,
    progress: ProgressOpt = "bar",
) -> None:
    """Cut rasters and labels into GeoTIFF chips with masks, a manifest and dataset.json (resumable)."""
    from rasterlearn.chips import run_chips

    options = stage_options(ctx, ChipsOptions)
    result = run_chips(options, phases=progress_bar)  # one bar per phase: scanning windows, writing chips
    _print_summary(result)


def _print_summary(result: Any) -> None:
    from rich.table import Table

    ds = result.dataset
    t = Table(title=f"chip dataset {result.out}")
    t.add_column("item")
    t.add_column("value")
    t.add_row("chips", ", ".join(f"{k} {v}" for k, v in ds["splits"].items()))
    t.add_row("written / already there", f"{result.written} / {result.skipped}")
    t.add_row("split method", ds["split_method"] + (" [bold red](leaky)[/]" if ds["leaky"] else ""))
    t.add_row("dropped", ", ".join(f"{k} {v}" for k, v in ds["dropped"].items() if v) or "none")
    t.add_row("classes", ", ".join(f"{c['code']}={c['name']}" for c in ds["schema"]["classes"]))
    t.add_row("ignore code", str(ds["schema"]["ignore_index"]))
    t.add_row("bands", ", ".join(ds["bands"]))
    if ds.get("timesteps", 1) > 1:
        t.add_row("dates", str(ds["timesteps"]))
    t.add_row("parameters", ds["params_hash"])
    console.print(t)


class AnalyzeConfig(BaseModel):
    """Options of ``rasterlearn analyze``."""

    model_config = ConfigDict(extra="forbid")

    dataset: Path
    out: Path | None = None
    min_keep: float = Field(0.1, ge=0.0, le=1.0)
    annotated: list[float] | None = None
    proportion: list[float] | None = None
    plot: bool = True
    top: int = Field(10, gt=0)


@app.command(context_settings=FOLDER_OUTPUT)
def analyze(
    dataset: Annotated[Path, typer.Argument(help="Chip dataset folder written by `rasterlearn chips`.")],
    out: Annotated[Path | None, out_folder_option("Output folder (default: DATASET/analysis).")] = None,
    min_keep: Annotated[
        float | None,
        typer.Option(help="Threshold search: keep at least this fraction of chips (default: 0.1)."),
    ] = None,
    annotated: Annotated[
        str | None, typer.Option(help="min_annotated percents to try, e.g. '0,5,10,20'.")
    ] = None,
    proportion: Annotated[
        str | None, typer.Option(help="class_proportion percents to try, e.g. '0,5,10'.")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Skip the bar chart PNG.")] = False,
    top: Annotated[
        int | None, typer.Option(help="Rows of the threshold search to print (default: 10).")
    ] = None,
    config: Annotated[Path | None, config_file_option("YAML file with these options.")] = None,
    progress: ProgressOpt = "bar",
) -> None:
    """Class proportions per split and scene, chips kept/dropped per filter, and a threshold search."""
    from rich.table import Table

    from rasterlearn.analysis import analyze_dataset

    cli = {
        "dataset": dataset,
        "out": out,
        "min_keep": min_keep,
        "annotated": parse_numbers(annotated, "--annotated", float, "percents", "0,5,10,20"),
        "proportion": parse_numbers(proportion, "--proportion", float, "percents", "0,5,10"),
        "plot": False if no_plot else None,
        "top": top,
    }
    cfg: AnalyzeConfig = _load_config(config, cli, AnalyzeConfig)
    kw: dict[str, Any] = {}
    if cfg.annotated:
        kw["annotated"] = cfg.annotated
    if cfg.proportion:
        kw["proportion"] = cfg.proportion
    res = analyze_dataset(cfg.dataset, cfg.out, min_keep=cfg.min_keep, plot=cfg.plot, **kw)
    t = Table(title="class proportions (share of labelled pixels)")
    for col in ("by", "group", "chips", "class", "pixels", "proportion"):
        t.add_column(col, justify="right" if col in ("chips", "pixels", "proportion") else "left")
    for r in res.proportions.itertuples(index=False):
        t.add_row(
            r.group_by, r.group, str(r.chips), f"{r.code} {r.name}", str(r.pixels), f"{r.proportion:.3f}"
        )
    console.print(t)
    f = Table(title="filters (first failing filter / failing on its own)")
    for col in ("filter", "dropped_first", "failing_alone"):
        f.add_column(col)
    for r in res.filters.itertuples(index=False):
        f.add_row(
            str(r.filter),
            str(r.dropped_first),
            "" if r.failing_alone is None or str(r.failing_alone) == "<NA>" else str(r.failing_alone),
        )
    console.print(f)
    if not res.thresholds.empty:
        s = Table(title="threshold search (best first; balance = normalized class entropy)")
        cols = [c for c in res.thresholds.columns]
        for col in cols:
            s.add_column(col)
        for r in res.thresholds.head(cfg.top).itertuples(index=False):
            s.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r])
        console.print(s)
    if res.best:
        cls = (
            f" --class-proportion {res.best['class']}:{res.best['class_proportion']:g}"
            if res.best["class"]
            else ""
        )
        console.print(
            f"Best balance: --min-annotated {res.best['min_annotated']:g}{cls} keeps {res.best['chips']} "
            f"chips (balance {res.best['balance']:.3f})"
        )
    console.print("Saved: " + ", ".join(str(p) for p in res.files.values()))
