"""The embed stage's API: :func:`run_embed` takes the stage's options model and does what ``rasterlearn embed``
does between parsing its options and printing its result.

``rasterlearn embed``, ``rasterlearn embed --config embed.yaml``, the pipeline's ``features`` stage and a
notebook all go through it::

    from rasterlearn.embed import run_embed
    from rasterlearn.options import EmbedOptions

    res = run_embed(EmbedOptions(raster="scene.tif", model="resnet18", output="features.tif", size=64))
    print(res.path, res.grid.width, res.grid.height, res.dim)

The kernel below it is :func:`rasterlearn.embed.embed` (keyword arguments: arrays of bands, windows, a built
backbone, an executor); the one map between the options' fields and its keywords is
:mod:`rasterlearn.embed.request` (:func:`~rasterlearn.embed.request.kernel_name`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rasterlearn.embed.job import EmbedResult, embed
from rasterlearn.embed.request import NEGATED, STAGE_ONLY, kernel_name
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import open_executor
from rasterlearn.errors import ConfigError
from rasterlearn.options import EmbedOptions, parse_bands

__all__ = ["embed_arguments", "run_embed"]

log = logging.getLogger("rasterlearn.embed")


def embed_arguments(options: EmbedOptions) -> dict[str, Any]:
    """:func:`~rasterlearn.embed.embed`'s keywords for ``options``, less the raster and what
    :func:`run_embed` resolves itself (:data:`~rasterlearn.embed.request.STAGE_ONLY`): every other field under
    its keyword (:func:`~rasterlearn.embed.request.kernel_name`), the texts parsed (bands, ``aoi``,
    ``model_kwargs`` JSON).

    Raises:
        ConfigError: ``model_kwargs`` is not a JSON object.
    """
    from rasterlearn.features._io import parse_kwargs
    from rasterlearn.io.aoi import parse_aoi

    kw: dict[str, Any] = {}
    for name in EmbedOptions.model_fields:
        if name in STAGE_ONLY or name == "raster":
            continue
        value = getattr(options, name)
        kw[kernel_name(name)] = (not value) if name in NEGATED else value
    kw["bands"] = parse_bands(options.bands)
    kw["model_kwargs"] = parse_kwargs(options.model_kwargs, "model") or None
    kw["extent"] = parse_aoi(options.aoi or None)
    return kw


def _stac_folder(options: EmbedOptions) -> Path:
    """Where a STAC item's stack is written for dask workers: ``stac/`` beside the output (or in the
    session cache when there is no output)."""
    if options.output is not None:
        return options.output.parent / "stac"
    return (options.cache_dir or Path.cwd() / "embed_sessions") / "stac"


def _tile_estimate(path: str, size: int, stride: int | None) -> int:
    """The number of tiles over the whole raster (the job announces the true total once planned)."""
    from rasterlearn.grid import plan_tiles
    from rasterlearn.io.raster import RasterReader

    with RasterReader(path) as r:
        return len(plan_tiles(r.grid, size, stride or size))


def run_embed(options: EmbedOptions, *, progress: Callable[[int], None] | None = None) -> EmbedResult:
    """Encode a raster into a feature raster as ``rasterlearn embed`` does with these options.

    Resolves the input (``raster``, or the ``stac`` item's ``assets`` stacked: in memory, or beside the
    output when dask workers must open it), announces the number of tiles to ``progress``
    (:func:`rasterlearn.engine.events.report_total`), opens the executor (``scheduler``/``workers``:
    :func:`rasterlearn.engine.executor.open_executor`) and runs :func:`~rasterlearn.embed.embed` with the
    options' values (:func:`embed_arguments`), the STAC item's provenance recorded in the features' tags.

    Args:
        options: the stage's options (CLI, ``--config`` YAML or built in Python); ``model`` is required.
        progress: called with the number of tiles finished after every tile row (where stopping is safe:
            the committed strips are kept); a cancellation raised from it stops the job resumably.

    Returns:
        The :class:`~rasterlearn.embed.EmbedResult`: output path, session folder, feature grid, dimension.

    Raises:
        ConfigError: no model, neither or both of ``raster`` and ``stac``, ``assets`` without ``stac``,
            ``model_kwargs`` not a JSON object, both ``scheduler`` and ``workers``; and what
            :func:`~rasterlearn.embed.embed` raises.
    """
    from rasterlearn.io.stac import resolve_source

    if not options.model:
        raise ConfigError(
            "embed needs a model: give --model NAME (a timm name, hf-hub:org/name or one of "
            "'rasterlearn embed-models'), or model: in the --config file"
        )
    arguments = embed_arguments(options)
    distributed = options.scheduler is not None or options.workers is not None
    stac_dir = _stac_folder(options) if distributed else None
    path, source = resolve_source(options.raster, options.stac, options.assets, dest_dir=stac_dir)
    report_total(progress, _tile_estimate(path, options.size, options.stride))
    with open_executor(options.scheduler, options.workers) as executor:
        return embed(path, progress=progress, executor=executor, provenance=source or None, **arguments)
