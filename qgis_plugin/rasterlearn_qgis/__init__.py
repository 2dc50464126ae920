"""rasterlearn QGIS plugin: every rasterlearn workflow as QGIS Processing algorithms.

The plugin imports only ``qgis.core``, ``qgis.gui`` and ``qgis.PyQt``; rasterlearn (and PyTorch) run in their
own environment as a subprocess. This module stays importable without QGIS (``classFactory`` imports lazily).
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    from .plugin import RasterlearnPlugin

    return RasterlearnPlugin(iface)
