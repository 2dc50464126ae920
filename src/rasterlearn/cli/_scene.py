"""The raster a command reads: a path, URL or /vsi path given as RASTER, or a STAC item's assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def resolve_raster(
    raster: str | Path | None, stac: str | None, assets: str | None, dest_dir: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """The path to open and what the output should record about it (the STAC item, when one is used).

    A STAC item's stack is held in memory, or written as ``DEST_DIR/<item id>.vrt`` when ``dest_dir`` is
    given (for dask workers, which cannot see this process's memory)."""
    if stac is None:
        if assets:
            raise typer.BadParameter("--assets needs --stac ITEM.json (the STAC item whose assets to stack)")
        if raster is None:
            raise typer.BadParameter(
                "Give a RASTER to read (a file, URL or /vsi... path) or --stac ITEM.json"
            )
        return str(raster), {}
    if raster is not None:
        raise typer.BadParameter(f"Give either RASTER ({raster}) or --stac {stac}, not both")
    from rasterlearn.io.stac import stac_scenes, stac_stack

    names = asset_names(assets)
    st = stac_stack(stac, names) if dest_dir is None else stac_scenes([stac], names, dest_dir)[0]
    return st.path, st.provenance()


def asset_names(assets: str | None) -> list[str]:
    """``--assets B04,B03,B02`` as a list of names."""
    return [a.strip() for a in (assets or "").split(",") if a.strip()]
