"""Full-scene accuracy assessment of a class map against vector or raster ground truth.

The truth is brought onto the *map's* grid, window by window: vector truth is reprojected to the map's CRS
and rasterized (pixel centres, or every touched pixel); raster truth on another grid is reprojected /
resampled with nearest neighbour. Both are logged and recorded in the output. Pixels are skipped where the
map is nodata, the truth is nodata / the schema's ignore code / a user ignore value, or outside the AOI.
One confusion matrix is accumulated over the whole scene (:mod:`rasterlearn.metrics`), then per-class IoU,
F1, precision (user's accuracy), recall (producer's accuracy), overall accuracy, mean IoU and kappa are
written as JSON, a CSV table and a confusion-matrix PNG.

The package follows the phases: :mod:`.classes` (truth class names, matching them to the map's),
:mod:`.truth` (the truth on the map's grid), :mod:`.run` (:func:`evaluate_map`: options, the map's classes,
counting windows with :mod:`rasterlearn.evaluate_kernel`, metrics, the report); :mod:`.stage` is the stage
API, :func:`run_evaluate` of an :class:`~rasterlearn.options.EvaluateOptions` (what the CLI command and the
run YAML call).
"""

from __future__ import annotations

from rasterlearn.class_maps import map_schema, raster_class_names
from rasterlearn.evaluate.classes import (
    ClassMatch,
    TruthClasses,
    Unlabelled,
    match_class_names,
    parse_class_names,
    resolve_class_names,
)
from rasterlearn.evaluate.run import evaluate_map, evaluation_fingerprint
from rasterlearn.evaluate.stage import EvaluateResult, run_evaluate

__all__ = [
    "ClassMatch",
    "EvaluateResult",
    "TruthClasses",
    "Unlabelled",
    "evaluate_map",
    "evaluation_fingerprint",
    "map_schema",
    "match_class_names",
    "parse_class_names",
    "raster_class_names",
    "resolve_class_names",
    "run_evaluate",
]
