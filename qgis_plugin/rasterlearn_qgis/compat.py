"""Enum names that moved between QGIS 3.22 (Qt5) and QGIS 3.36+/4 (Qt6): look up the new, then the old."""

from __future__ import annotations

from typing import Any

__all__ = ["qenum"]


def qenum(new: str, old: str) -> Any:
    """``qenum("Qgis.ProcessingSourceType.VectorAnyGeometry", "QgsProcessing.TypeVectorAnyGeometry")``."""
    from qgis import core

    for path in (new, old):
        obj: Any = core
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AttributeError(f"neither {new} nor {old} exists in this QGIS")
