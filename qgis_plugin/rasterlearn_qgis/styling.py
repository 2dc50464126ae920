"""Styles for rasterlearn outputs, written beside / into the files so they open styled anywhere.

- class maps (cluster, classify, predict): the CLI writes ``MAP.qml`` (paletted: codes, names, colours) and
  category names in ``MAP.tif.aux.xml``; nothing to add.
- probabilities and similarity: single-band pseudocolour 0-1 (``OUT.qml``).
- features and PCA: RGB of the first three bands with a cumulative-cut stretch (``OUT.qml``).
- polygons: categorized by ``class_code`` with the class map's colours and names, stored *inside* the
  GeoPackage (``layer_styles``, default style). QGIS prefers a GeoPackage's own default style over a
  ``.qml`` beside it, so ``MAP.gpkg`` no longer opens with the raster style ``MAP.qml``.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsMultiBandColorRenderer,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from .compat import qenum

__all__ = ["class_colors", "style_output", "style_polygons", "style_probability", "style_rgb"]


def class_colors(map_path: str) -> dict[int, tuple[QColor, str]]:
    """Code -> (colour, label) of a class map's colour table / paletted style."""
    layer = QgsRasterLayer(map_path, "map")
    out: dict[int, tuple[QColor, str]] = {}
    if not layer.isValid():
        return out
    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "paletted":
        for c in renderer.classes():
            out[int(c.value)] = (QColor(c.color), str(c.label))
        return out
    for item in layer.dataProvider().colorTable(1) or []:
        out[int(item.value)] = (QColor(item.color), str(item.label))
    return out


def style_probability(path: str, band: int = 1) -> QgsRasterLayer:
    """Single-band pseudocolour (viridis) from 0 to 1; saved as ``OUT.qml``."""
    layer = QgsRasterLayer(path, Path(path).stem)
    ramp = QgsStyle.defaultStyle().colorRamp("Viridis")
    fn = QgsColorRampShader(0.0, 1.0, ramp)
    fn.setColorRampType(qenum("QgsColorRampShader.Type.Interpolated", "QgsColorRampShader.Interpolated"))
    fn.classifyColorRamp(5, -1)
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    layer.saveNamedStyle(str(Path(path).with_suffix(".qml")))
    return layer


def style_rgb(path: str) -> QgsRasterLayer:
    """RGB of bands 1-3 (grey for fewer bands) with a 2-98 % cumulative-cut stretch; saved as ``OUT.qml``."""
    layer = QgsRasterLayer(path, Path(path).stem)
    provider = layer.dataProvider()
    if layer.bandCount() >= 3:
        layer.setRenderer(QgsMultiBandColorRenderer(provider, 1, 2, 3))
    else:
        layer.setRenderer(QgsSingleBandGrayRenderer(provider, 1))
    layer.setContrastEnhancement(
        qenum(
            "QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum",
            "QgsContrastEnhancement.StretchToMinimumMaximum",
        ),
        qenum("Qgis.RasterRangeLimit.CumulativeCut", "QgsRasterMinMaxOrigin.CumulativeCut"),
    )
    layer.saveNamedStyle(str(Path(path).with_suffix(".qml")))
    return layer


def style_polygons(path: str, map_path: str | None) -> QgsVectorLayer:
    """Categorize polygons by ``class_code`` with the class map's colours; store it in the GeoPackage."""
    layer = QgsVectorLayer(path, Path(path).stem, "ogr")
    if path.lower().endswith(".gpkg") and layer.listStylesInDatabase()[0] > 0:
        return layer  # the CLI (vectorize, predict --vectorize) stored the categorized style in it
    colors = class_colors(map_path) if map_path else {}
    idx_code = layer.fields().indexOf("class_code")
    idx_name = layer.fields().indexOf("class_name")
    names: dict[int, str] = {}
    if idx_code >= 0:
        for f in layer.getFeatures():
            names.setdefault(int(f[idx_code]), str(f[idx_name]) if idx_name >= 0 else str(f[idx_code]))
    categories = []
    for code in sorted(set(names) | (set(colors) if not names else set())):
        color, label = colors.get(code, (QColor.fromHsv((code * 47) % 360, 180, 220), ""))
        symbol = QgsFillSymbol.createSimple(
            {"color": color.name(), "outline_color": color.darker(150).name()}
        )
        categories.append(QgsRendererCategory(code, symbol, names.get(code) or label or str(code)))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_code", categories))
    if path.lower().endswith(".gpkg"):
        layer.saveStyleToDatabase(Path(path).stem, "rasterlearn classes", True, "")
    else:
        layer.saveNamedStyle(str(Path(path).with_suffix(".qml")))
    return layer


def style_output(kind: str, path: str, *, map_path: str | None = None) -> None:
    """Apply and store the style ``kind`` (classes, probability, rgb, polygons) of an output file."""
    if not path or not Path(path).exists():
        return
    if kind == "probability":
        style_probability(path)
    elif kind == "rgb":
        style_rgb(path)
    elif kind == "polygons":
        style_polygons(path, map_path)
