"""The evaluate stage: :func:`run_evaluate` carries out one :class:`~rasterlearn.options.EvaluateOptions`.

It is what ``rasterlearn evaluate`` (and ``--config FILE.yaml``) does between parsing and printing: the
option texts parsed (inline truth names, the ignore list, the AOI), the schema file loaded, the executor
opened from ``scheduler``/``workers``, the map's pixel count announced to ``progress``
(:func:`rasterlearn.engine.events.report_total`), then :func:`rasterlearn.evaluate.evaluate_map` with the
options, which make its resume fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import open_executor
from rasterlearn.errors import InputError
from rasterlearn.evaluate.classes import parse_class_names
from rasterlearn.evaluate.run import evaluate_map
from rasterlearn.io.aoi import parse_aoi
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassSchema
from rasterlearn.options import EvaluateOptions, parse_numbers

__all__ = ["EvaluateResult", "run_evaluate"]


@dataclass(frozen=True)
class EvaluateResult:
    """What :func:`run_evaluate` did.

    Attributes:
        metrics: :func:`~rasterlearn.evaluate.evaluate_map`'s metrics (confusion matrix, per-class IoU, F1,
            accuracies, kappa) with its ``evaluation`` record.
        output: the metrics JSON written (``None`` when the options name no output).
        csv: the per-class table beside it.
        png: the confusion-matrix figure beside it.
    """

    metrics: dict[str, Any]
    output: Path | None
    csv: Path | None
    png: Path | None


def run_evaluate(
    options: EvaluateOptions, *, progress: Callable[[int], None] | None = None
) -> EvaluateResult:
    """Compare a predicted class map with ground truth as ``options`` say (``rasterlearn evaluate``).

    Args:
        options: the stage's options: ``map`` and ``truth`` are required; without ``output`` nothing is
            written (the metrics are returned).
        progress: called with the number of map pixels compared, between windows (after each window's
            counts are recorded, so a cancellation raised from it resumes); told the total first
            (:func:`~rasterlearn.engine.events.report_total`: the map's pixels, then the AOI's).

    Returns:
        The :class:`EvaluateResult`.

    Raises:
        InputError: a missing map or truth, both ``truth_classes`` and ``truth_names``, an ignore value that
            is not a number; and :func:`~rasterlearn.evaluate.evaluate_map`'s errors.
    """
    map_path, truth = options.require("map", "truth")
    if options.truth_classes is not None and options.truth_names is not None:
        raise InputError("Give either --truth-classes FILE or --truth-names TEXT, not both")
    truth_classes = (
        parse_class_names(options.truth_names) if options.truth_names is not None else options.truth_classes
    )
    ignore_values = parse_numbers(options.ignore, "ignore", float)
    schema = ClassSchema.load(options.schema_) if options.schema_ else None
    with RasterReader(map_path) as reader:
        pixels = reader.grid.height * reader.grid.width
    with open_executor(options.scheduler, options.workers) as executor:
        report_total(progress, pixels)  # the whole map; evaluate_map corrects it when an AOI clips it
        metrics = evaluate_map(
            map_path,
            truth,
            attribute=options.attribute,
            layer=options.layer,
            schema=schema,
            truth_classes=truth_classes,
            class_match=options.class_match,
            unlabelled=options.unlabelled,
            aoi=parse_aoi(options.aoi),
            ignore_values=ignore_values,
            all_touched=options.all_touched,
            output=options.output,
            progress=progress,
            executor=executor,
        )
    out = options.output
    if out is None:
        return EvaluateResult(metrics, None, None, None)
    return EvaluateResult(metrics, out, out.with_suffix(".csv"), out.with_suffix(".png"))
