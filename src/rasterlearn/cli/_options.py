"""The options that recur across commands, each declared once: its spelling, short flag and help.

A concept whose help text is the same in every command is a ready ``Annotated`` alias (``SchedulerOpt``);
one whose help names what the command writes or reads is a small factory fixing the spelling, used as
``Annotated[Path, output_option("Class map to write (COG).")]``. Defaults stay in the command's signature
(``= "auto"``), where ``tests/test_config.py`` holds them equal to the command's options model, and are
shown in ``--help`` (``show_default``). Former spellings (``--out`` of the commands writing a folder and of
``chips``, ``embed --extent``/``--extent-crs``/``--read-threads``, ``train --workers``/``--scheduler``) still
parse, hidden from ``--help``, through one mechanism: :func:`former_spellings` on the command.

Also here: the parsers of the values these options share (:func:`parse_aoi`, :func:`parse_bands`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rasterlearn.cli._config import config_option
from rasterlearn.cli._progress import ProgressOpt

__all__ = [
    "FOLDER_OUTPUT",
    "AoiCrsOpt",
    "AssetsOpt",
    "CacheMbOpt",
    "LayerOpt",
    "LoaderWorkersOpt",
    "OverwriteOpt",
    "ProgressOpt",
    "SchedulerOpt",
    "StacOpt",
    "WorkersOpt",
    "aoi_option",
    "attribute_option",
    "bands_option",
    "batch_size_option",
    "blocksize_option",
    "config_file_option",
    "config_option",
    "device_option",
    "former_spellings",
    "image_option",
    "io_threads_option",
    "labels_option",
    "layer_option",
    "memory_mb_option",
    "no_resume_option",
    "nodata_policy_option",
    "out_folder_option",
    "output_option",
    "overwrite_option",
    "parse_aoi",
    "parse_bands",
    "seed_option",
    "stac_option",
]


def _option(*decls: str, help: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` with the house defaults: the default value shown in ``--help``."""
    return typer.Option(*decls, help=help, show_default=True, **kwargs)


# -- what a command writes -----------------------------------------------------------------------------------
def output_option(help: str) -> Any:
    """``-o/--output``: the file (or dataset folder) a command writes."""
    return _option("--output", "-o", help=help)


def out_folder_option(help: str) -> Any:
    """``-o/--output``: the output folder of the commands that write a whole folder (train, compare, demo,
    run, analyze); their former spelling ``--out`` is accepted through :func:`former_spellings`."""
    return _option("--output", "-o", help=help)


def former_spellings(**former: str) -> dict[str, Any]:
    """``context_settings`` of a command that still accepts former option spellings, hidden from ``--help``:
    ``former_spellings(out="output")`` makes ``--out X`` mean ``--output X``. Click normalizes every option
    name a user types through this mapping before matching it, so the old spelling needs no second
    parameter."""
    names = {old.replace("_", "-"): new for old, new in former.items()}
    return {"token_normalize_func": lambda name: names.get(name, name)}


FOLDER_OUTPUT = former_spellings(out="output")
"""The commands writing a folder: ``--out`` is the former spelling of ``--output``."""


def overwrite_option(help: str, *, negatable: bool = True) -> Any:
    """``--overwrite`` (with ``--no-overwrite`` unless ``negatable=False``, as each command had it)."""
    return _option("--overwrite/--no-overwrite" if negatable else "--overwrite", help=help)


OverwriteOpt = Annotated[bool, overwrite_option("Replace an existing output.")]


def no_resume_option(help: str) -> Any:
    """``--no-resume``: start afresh instead of resuming a partial run."""
    return _option("--no-resume", help=help)


# -- what a command reads ------------------------------------------------------------------------------------
def config_file_option(help: str) -> Any:
    """``--config FILE`` of the commands without an options model (train, compare, analyze); the stage
    commands use :func:`~rasterlearn.cli._config.config_option`."""
    return _option("--config", help=help)


def image_option(help: str) -> Any:
    """``--image`` (repeatable): one raster per date of a multi-date scene."""
    return _option("--image", help=help)


def labels_option(help: str) -> Any:
    """``-l/--labels``: vector labels."""
    return _option("--labels", "-l", help=help)


def attribute_option(help: str) -> Any:
    """``-a/--attribute``: the class attribute of the labels."""
    return _option("--attribute", "-a", help=help)


def bands_option(help: str) -> Any:
    """``--bands``: a comma list of 1-based band indexes or descriptions (see :func:`parse_bands`)."""
    return _option("--bands", help=help)


def nodata_policy_option(help: str) -> Any:
    """``--nodata-policy``: all-valid or any-valid, for multi-date input."""
    return _option("--nodata-policy", help=help)


def stac_option(help: str) -> Any:
    """``--stac ITEM.json``: a STAC item read instead of RASTER."""
    return _option("--stac", metavar="ITEM.json", help=help)


StacOpt = Annotated[
    str | None,
    stac_option("Read a STAC item (path or URL) instead of RASTER: its --assets stacked on one grid."),
]
AssetsOpt = Annotated[
    str | None,
    _option(
        "--assets", metavar="A,B,...", help="With --stac: the item's assets, in band order (B04,B03,B02)."
    ),
]


def layer_option(help: str) -> Any:
    """``--layer``: the layer of a multi-layer vector file."""
    return _option("--layer", help=help)


LayerOpt = Annotated[str | None, layer_option("Vector layer name.")]


def aoi_option(help: str) -> Any:
    """``--aoi``: an area of interest, a vector file or ``left,bottom,right,top`` (see :func:`parse_aoi`)."""
    return _option("--aoi", help=help)


AoiCrsOpt = Annotated[
    str | None,
    _option("--aoi-crs", help="CRS of --aoi bounds (default: the raster's; formerly --extent-crs)."),
]


# -- how a command computes ----------------------------------------------------------------------------------
def device_option(help: str) -> Any:
    """``--device``: where the network runs."""
    return _option("--device", help=help)


def batch_size_option(help: str) -> Any:
    """``--batch-size``: items per model call."""
    return _option("--batch-size", help=help)


def io_threads_option(help: str) -> Any:
    """``--io-threads``: reader threads of this process."""
    return _option("--io-threads", help=help)


def memory_mb_option(help: str) -> Any:
    """``--memory-mb``: the working-memory budget of a streaming job."""
    return _option("--memory-mb", help=help)


CacheMbOpt = Annotated[int, _option("--cache-mb", help="GDAL block cache bound during the job (MB).")]


def blocksize_option(help: str) -> Any:
    """``--blocksize``: the processing / output block side in pixels."""
    return _option("--blocksize", help=help)


def seed_option(help: str | None = None) -> Any:
    """``--seed``: the random seed."""
    return _option("--seed", help=help)


SchedulerOpt = Annotated[
    str | None,
    _option(
        "--scheduler",
        metavar="ADDRESS",
        help="Compute blocks on a running dask.distributed scheduler (tcp://HOST:8786); the raster must be "
        "readable from the workers (shared storage or a URL).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    _option(
        "--workers",
        min=1,
        help="Compute blocks on a dask LocalCluster of N worker processes started for this job.",
    ),
]
LoaderWorkersOpt = Annotated[
    int | None, _option("--loader-workers", help="DataLoader worker processes. (default: auto)")
]
"""``--loader-workers`` of train and compare: PyTorch DataLoader worker processes; ``--workers`` means dask
workers everywhere else (train and compare still accept it as their former spelling)."""


# -- parsers of the shared values ----------------------------------------------------------------------------
def parse_aoi(aoi: str | None) -> Any:
    """``--aoi``: four comma-separated numbers are bounds (a tuple), anything else a vector file path
    (:func:`rasterlearn.io.aoi.parse_aoi`)."""
    from rasterlearn.io.aoi import parse_aoi as parse

    return parse(aoi)


def parse_bands(bands: str | None) -> list[int | str] | None:
    """``--bands 4,3,2`` or ``--bands red,nir``: 1-based indexes as ints, descriptions as strings."""
    if not bands:
        return None
    return [int(b) if b.strip().isdigit() else b.strip() for b in bands.split(",") if b.strip()]
