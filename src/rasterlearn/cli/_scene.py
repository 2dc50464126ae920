"""The raster a command reads: a path, URL or /vsi path given as RASTER, or a STAC item's assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def resolve_raster(
    raster: str | Path | None, stac: str | None, assets: str | None, dest_dir: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """:func:`rasterlearn.io.stac.resolve_source`, its refusals as usage errors of the command.

    A STAC item's stack is held in memory, or written as ``DEST_DIR/<item id>.vrt`` when ``dest_dir`` is
    given (for dask workers, which cannot see this process's memory)."""
    from rasterlearn.errors import ConfigError
    from rasterlearn.io.stac import resolve_source

    try:
        return resolve_source(raster, stac, assets, dest_dir)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


def asset_names(assets: str | None) -> list[str]:
    """``--assets B04,B03,B02`` as a list of names (:func:`rasterlearn.io.stac.asset_names`)."""
    from rasterlearn.io.stac import asset_names as names

    return names(assets)
