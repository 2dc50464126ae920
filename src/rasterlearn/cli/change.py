"""``rasterlearn change``: unsupervised change between two dates (feature or raw-band rasters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._options import (
    OverwriteOpt,
    ProgressOpt,
    bands_option,
    nodata_policy_option,
    output_option,
    overwrite_option,
    parse_bands,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar


@app.command("change")
def change_cmd(
    raster_a: Annotated[
        Path, typer.Argument(metavar="FEAT_A", help="Date A: a feature raster (or raw bands).")
    ],
    raster_b: Annotated[
        Path, typer.Argument(metavar="FEAT_B", help="Date B, resampled onto A's grid if needed.")
    ],
    output: Annotated[Path, output_option("Change map to write (COG: 0, 1, 255 nodata).")],
    method: Annotated[
        Literal["cosine", "cva"],
        typer.Option(
            help="cosine (feature rasters from 'embed') or cva (change vector magnitude, raw bands)."
        ),
    ] = "cosine",
    threshold: Annotated[
        float | None, typer.Option(help="Distance above which a pixel is change. (default: Otsu's threshold)")
    ] = None,
    distance: Annotated[Path | None, typer.Option(help="Also write the float32 distance raster.")] = None,
    polygons: Annotated[
        Path | None, typer.Option(help="Also write change polygons (.gpkg, .geojson, .fgb).")
    ] = None,
    min_area: Annotated[
        float, typer.Option(help="--polygons: drop polygons smaller than this (map units).")
    ] = 0.0,
    bands: Annotated[
        str | None, bands_option("Bands of each date: comma list of 1-based indexes or descriptions.")
    ] = None,
    nodata_policy: Annotated[
        Literal["all-valid", "any-valid"],
        nodata_policy_option("all-valid (nodata in either date is nodata) or any-valid."),
    ] = "all-valid",
    seed: Annotated[int, seed_option("Seed of the pixel sample for the automatic threshold.")] = 0,
    overwrite: Annotated[bool, overwrite_option("Replace existing outputs.", negatable=False)] = False,
    progress: ProgressOpt = "bar",
) -> None:
    """Map change between two dates: per-pixel distance, automatic (Otsu) threshold, optional polygons.

    Feature rasters must come from the same network, weights, bands and normalization ('embed' tags).
    """
    from rasterlearn.change import change_map

    with progress_bar("change", None, "blocks") as advance:
        res = change_map(
            raster_a,
            raster_b,
            output,
            method=method,
            threshold=threshold,
            distance=distance,
            polygons=polygons,
            min_area=min_area,
            bands=parse_bands(bands),
            nodata_policy=nodata_policy,
            seed=seed,
            overwrite=overwrite,
            progress=advance,
        )
    extra = "".join(f", {p}" for p in (res.distance_path, res.polygons_path) if p is not None)
    console.print(
        f"Wrote {res.map_path}{extra}: {100 * res.changed_fraction:.2f} % of {res.valid_pixels:,} pixels changed "
        f"({res.method} distance > {res.threshold:.4g}, {res.threshold_method} threshold"
        + (f"; {res.polygons} polygons)" if res.polygons is not None else ")")
    )


@app.command("transitions")
def transitions_cmd(
    labels_a: Annotated[Path, typer.Argument(metavar="LABELS_A", help="Label polygons of the first date.")],
    labels_b: Annotated[Path, typer.Argument(metavar="LABELS_B", help="Label polygons of the second date.")],
    output: Annotated[Path, output_option("Transition polygons to write (.gpkg, .geojson, .fgb).")],
    attribute: Annotated[str, typer.Option(help="Class attribute of LABELS_A (and of LABELS_B).")],
    attribute_b: Annotated[
        str | None, typer.Option(help="Class attribute of LABELS_B when it differs. (default: --attribute)")
    ] = None,
    layer_a: Annotated[str | None, typer.Option(help="Layer of LABELS_A (multi-layer files).")] = None,
    layer_b: Annotated[str | None, typer.Option(help="Layer of LABELS_B (multi-layer files).")] = None,
    drop_unchanged: Annotated[
        bool, typer.Option("--drop-unchanged", help="Leave out pieces whose class did not change.")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """From→to change labels: overlay two dates' label polygons ('transition' and 'changed' attributes)."""
    from rasterlearn.change_labels import transition_labels

    res = transition_labels(
        labels_a,
        labels_b,
        output,
        attribute=attribute,
        attribute_b=attribute_b,
        layer_a=layer_a,
        layer_b=layer_b,
        keep_unchanged=not drop_unchanged,
        overwrite=overwrite,
    )
    areas = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(res.areas.items()))
    console.print(f"Wrote {res.features} polygons to {res.path} (area per transition: {areas})")
