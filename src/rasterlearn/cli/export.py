"""``rasterlearn export`` (ONNX / TorchScript) and ``rasterlearn qgis-plugin`` (the QGIS plugin ZIP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._options import output_option, overwrite_option


@app.command("export")
def export_cmd(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL", help="Model package folder.")],
    output: Annotated[Path, output_option("File to write: model.onnx or model.pt.")],
    format: Annotated[
        Literal["onnx", "torchscript"] | None,
        typer.Option("--format", help="onnx or torchscript (default: from the output's suffix)."),
    ] = None,
    input_scale: Annotated[
        float | None,
        typer.Option(
            "--input-scale",
            help="Raw raster value = input x this (default 255 for ONNX, Deepness' 0-1 input; 1 for TorchScript).",
        ),
    ] = None,
    overlap: Annotated[
        float, typer.Option("--overlap", help="Tile overlap fraction recorded for Deepness.")
    ] = 0.25,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Do not run the exported model against PyTorch.")
    ] = False,
    overwrite: Annotated[bool, overwrite_option("Replace an existing output.", negatable=False)] = False,
) -> None:
    """Export a model package to ONNX (with Deepness metadata) or TorchScript: normalization inside, probabilities out."""
    from rasterlearn.export import export_model

    res = export_model(
        model_dir,
        output,
        format=format,
        input_scale=input_scale,
        overlap=overlap,
        opset=opset,
        check=not no_check,
        overwrite=overwrite,
    )
    check = "" if res.max_abs_diff is None else f"; max |Δ| to PyTorch {res.max_abs_diff:.1e}"
    console.print(
        f"Wrote {res.path} ({res.format}, input {list(res.input_shape)} x {res.input_scale:g}, "
        f"classes {list(res.metadata['class_names'].values())}{check})"
    )


@app.command("qgis-plugin")
def qgis_plugin_cmd(
    output: Annotated[Path, output_option("Plugin ZIP to write.")] = Path("rasterlearn_qgis.zip"),
    overwrite: Annotated[bool, overwrite_option("Replace an existing ZIP.", negatable=False)] = False,
) -> None:
    """Build the QGIS plugin ZIP (Plugins > Manage and Install Plugins > Install from ZIP)."""
    from rasterlearn.qgis_package import build_plugin_zip

    path = build_plugin_zip(output, overwrite=overwrite)
    console.print(f"Wrote {path}")
