"""The "rasterlearn" Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHM_CLASSES

__all__ = ["RasterlearnProvider"]


class RasterlearnProvider(QgsProcessingProvider):
    """Every rasterlearn workflow as Processing algorithms, run by the rasterlearn CLI out of process."""

    def id(self) -> str:
        return "rasterlearn"

    def name(self) -> str:
        return "rasterlearn"

    def longName(self) -> str:
        return "rasterlearn: deep learning on geospatial rasters"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).resolve().parent / "icon.png"))

    def loadAlgorithms(self) -> None:
        for cls in ALGORITHM_CLASSES:
            self.addAlgorithm(cls())
