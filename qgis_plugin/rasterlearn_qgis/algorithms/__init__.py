"""One Processing algorithm class per rasterlearn command, all built on :class:`RasterlearnAlgorithm`."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
)

from .base import RasterlearnAlgorithm

__all__ = ["ALGORITHM_CLASSES"]


class EmbedAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "embed"


class ReduceAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "reduce"


class ClusterAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "cluster"


class SimilarityAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "similarity"


class ClassifyAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "classify"


class ChipsAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "chips"


class AnalyzeAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "analyze"


class TrainAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "train"


class PredictAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "predict"


class EvaluateAlgorithm(RasterlearnAlgorithm):
    """Also returns overall accuracy, kappa and mean IoU as numbers."""

    SPEC_ID = "evaluate"

    def initAlgorithm(self, config: Any = None) -> None:
        super().initAlgorithm(config)
        for key, label in (
            ("OVERALL_ACCURACY", "Overall accuracy"),
            ("KAPPA", "Kappa"),
            ("MEAN_IOU", "Mean IoU"),
        ):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def post_process(self, values: dict[str, Any], result: Any, feedback: Any) -> dict[str, Any]:
        with open(values["OUTPUT"], encoding="utf-8") as fh:
            m = json.load(fh)
        return {
            "OVERALL_ACCURACY": m.get("overall_accuracy"),
            "KAPPA": m.get("kappa"),
            "MEAN_IOU": m.get("mean_iou"),
        }


class VectorizeAlgorithm(RasterlearnAlgorithm):
    SPEC_ID = "vectorize"


class InfoAlgorithm(RasterlearnAlgorithm):
    """Returns the description as JSON text (and writes it to OUTPUT when given) plus size, bands and CRS."""

    SPEC_ID = "info"

    def initAlgorithm(self, config: Any = None) -> None:
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputString("JSON", "Description (JSON)"))
        self.addOutput(QgsProcessingOutputString("CRS", "CRS"))
        for key, label in (("WIDTH", "Width"), ("HEIGHT", "Height"), ("BANDS", "Bands")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def post_process(self, values: dict[str, Any], result: Any, feedback: Any) -> dict[str, Any]:
        desc = json.loads(result.stdout)
        text = json.dumps(desc, indent=2)
        feedback.pushInfo(text)
        if values.get("OUTPUT"):
            with open(values["OUTPUT"], "w", encoding="utf-8") as fh:
                fh.write(text)
        crs = f"EPSG:{desc['epsg']}" if desc.get("epsg") else (desc.get("crs_name") or "")
        return {
            "JSON": text,
            "CRS": crs,
            "WIDTH": desc["width"],
            "HEIGHT": desc["height"],
            "BANDS": desc["count"],
        }


ALGORITHM_CLASSES: tuple[type[RasterlearnAlgorithm], ...] = (
    EmbedAlgorithm,
    ReduceAlgorithm,
    ClusterAlgorithm,
    SimilarityAlgorithm,
    ClassifyAlgorithm,
    ChipsAlgorithm,
    AnalyzeAlgorithm,
    TrainAlgorithm,
    PredictAlgorithm,
    EvaluateAlgorithm,
    VectorizeAlgorithm,
    InfoAlgorithm,
)
