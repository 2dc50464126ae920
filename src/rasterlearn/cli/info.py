"""``rasterlearn info``: describe a raster."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from rasterlearn.cli._app import app, console
from rasterlearn.cli._options import AssetsOpt, StacOpt
from rasterlearn.cli._scene import resolve_raster
from rasterlearn.io.raster import RasterReader, band_statistics


@app.command()
def info(
    raster: Annotated[
        str | None,
        typer.Argument(help="Any GDAL-readable raster: a file, a URL (https://, s3:// ...) or /vsi... path."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    stats: Annotated[
        bool, typer.Option("--stats", help="Add nodata-aware per-band statistics (sampled).")
    ] = False,
    sample_size: Annotated[int, typer.Option(help="Valid pixels sampled per band for --stats.")] = 200_000,
    stac: StacOpt = None,
    assets: AssetsOpt = None,
) -> None:
    """Grid, CRS, resolution, bands, nodata, block layout and (optionally) statistics of a raster."""
    raster, source = resolve_raster(raster, stac, assets)
    with RasterReader(raster, south_up_ok=True) as reader:
        desc = reader.describe()
        desc.update(source)
        if stats:
            all_reader = RasterReader(raster, list(range(1, reader.dataset.count + 1)), south_up_ok=True)
            with all_reader:
                desc["statistics"] = [
                    s.to_dict() for s in band_statistics(all_reader, sample_size=sample_size)
                ]
    if as_json:
        typer.echo(json.dumps(desc, indent=2, default=str))
        return
    _print_tables(desc)


def _print_tables(desc: dict) -> None:
    crs = desc["crs_name"] or "none"
    epsg = f"EPSG:{desc['epsg']}" if desc["epsg"] else "no EPSG code"
    head = Table.grid(padding=(0, 2))
    head.add_row("file", desc["path"])
    head.add_row("driver", desc["driver"])
    head.add_row("size", f"{desc['width']} x {desc['height']} px, {desc['count']} band(s)")
    head.add_row("crs", f"{crs} ({epsg}){' — geographic (degrees)' if desc['is_geographic'] else ''}")
    head.add_row("resolution", f"{desc['res'][0]:.6g} x {desc['res'][1]:.6g} {desc['crs_units'] or ''}")
    head.add_row("bounds", ", ".join(f"{v:.6f}" for v in desc["bounds"]))
    head.add_row("transform", ", ".join(f"{v:.6g}" for v in desc["transform"]))
    head.add_row("nodata", str(desc["nodata"]))
    head.add_row(
        "blocks",
        f"{desc['block_shapes']} {'tiled' if desc['tiled'] else 'striped'}, "
        f"interleave {desc['interleave']}, compression {desc['compression']}, overviews {desc['overviews']}",
    )
    console.print(head)
    table = Table(title="bands")
    for col in ("index", "description", "dtype", "nodata", "colour", "mask"):
        table.add_column(col)
    for b, flags in zip(desc["bands"], desc["mask_flags"], strict=True):
        table.add_row(
            str(b["index"]),
            b["description"] or "",
            b["dtype"],
            str(b["nodata"]),
            b["color_interp"],
            ",".join(flags),
        )
    console.print(table)
    if "statistics" in desc:
        st = Table(title="statistics (sampled valid pixels)")
        for col in ("band", "count", "mean", "std", "min", "p2", "p98", "max"):
            st.add_column(col, justify="right")
        for s in desc["statistics"]:
            st.add_row(
                s["band"],
                str(s["count"]),
                *(f"{s[k]:.4g}" for k in ("mean", "std", "min", "p2", "p98", "max")),
            )
        console.print(st)
