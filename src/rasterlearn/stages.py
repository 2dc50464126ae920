"""One Python call for every streaming stage: its options model in, its result out.

Each stage's library entry point takes the stage's options model (:mod:`rasterlearn.options`), the same value
the command line and ``--config FILE.yaml`` build, so a job described once runs the same way from Python, the
CLI, a YAML file or the QGIS plugin::

    from rasterlearn.options import PredictOptions
    from rasterlearn.stages import run_stage

    result = run_stage(PredictOptions(model="runs/unet", raster=["scene.tif"], output="map.tif"))
    result = run_config("predict.yaml", "predict")      # the same job from a --config file

:func:`run_stage` dispatches on the model's type to ``run_chips``, ``run_predict``, ``run_embed``,
``run_reduce``, ``run_cluster``, ``run_similarity``, ``run_classify``, ``run_evaluate`` or ``run_vectorize``
(importing only that stage). ``progress`` is the usual ``Callable[[int], None]`` called between blocks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rasterlearn.errors import ConfigError
from rasterlearn.options import STAGE_OPTIONS, StageOptions, describe_validation_error, load_options

__all__ = ["STAGE_RUNNERS", "run_config", "run_stage", "stage_runner"]

STAGE_RUNNERS: dict[str, tuple[str, str]] = {
    "chips": ("rasterlearn.chips", "run_chips"),
    "predict": ("rasterlearn.predict", "run_predict"),
    "embed": ("rasterlearn.embed", "run_embed"),
    "reduce": ("rasterlearn.features.reduce", "run_reduce"),
    "cluster": ("rasterlearn.features.cluster", "run_cluster"),
    "similarity": ("rasterlearn.features.similarity", "run_similarity"),
    "classify": ("rasterlearn.features.classify", "run_classify"),
    "evaluate": ("rasterlearn.evaluate", "run_evaluate"),
    "vectorize": ("rasterlearn.vectorize", "run_vectorize"),
}
"""Command name -> (module, function) of its library entry point."""


def stage_runner(command: str) -> Callable[..., Any]:
    """The ``run_<stage>`` function of ``command`` (imported on first use)."""
    try:
        module, name = STAGE_RUNNERS[command]
    except KeyError:
        raise ConfigError(
            f"No stage named {command!r}; the stages are {', '.join(sorted(STAGE_RUNNERS))}"
        ) from None
    runner: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return runner


def run_stage(options: StageOptions, *, progress: Callable[[int], None] | None = None) -> Any:
    """Run the stage ``options`` describes (a :class:`~rasterlearn.options.PredictOptions` runs predict...)
    and return that stage's result."""
    if not isinstance(options, StageOptions) or not type(options).command:
        raise ConfigError(
            f"run_stage takes a stage options model (rasterlearn.options: {', '.join(sorted(STAGE_OPTIONS))}), "
            f"got {type(options).__name__}"
        )
    return stage_runner(type(options).command)(options, progress=progress)


def run_config(
    path: str | Path, command: str, *, progress: Callable[[int], None] | None = None, **overrides: Any
) -> Any:
    """Run ``command`` from its ``--config`` YAML file; ``overrides`` replace the file's keys (as flags do)."""
    if command not in STAGE_OPTIONS:
        raise ConfigError(f"No stage named {command!r}; the stages are {', '.join(sorted(STAGE_OPTIONS))}")
    model = STAGE_OPTIONS[command]
    options = load_options(path, model)
    if overrides:
        try:
            options = model.model_validate(
                {**options.model_dump(by_alias=True, exclude_unset=True), **overrides}
            )
        except ValidationError as exc:
            raise ConfigError(
                f"{path} with {sorted(overrides)}: {describe_validation_error(exc, model)}"
            ) from exc
    return run_stage(options, progress=progress)
