"""QGIS styles stored inside GeoPackages, so polygons open categorized by class.

A class map ``MAP.tif`` comes with a raster style ``MAP.qml``; QGIS applies a ``.qml`` beside *any* file
with the same stem, so polygons written to ``MAP.gpkg`` used to open with the raster's style (and render as a
single symbol). A GeoPackage's own default style (QGIS' ``layer_styles`` table) takes precedence over a
``.qml`` beside it: :func:`write_class_style` stores a categorized renderer there, with the class map's
colours and names (:func:`rasterlearn.vectorize.class_styles_of_map`), keyed on the polygons' ``class_code``
field.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

from rasterlearn.errors import OutputError

__all__ = ["categorized_qml", "write_class_style"]

log = logging.getLogger(__name__)

_STYLE_TABLE = """CREATE TABLE IF NOT EXISTS layer_styles (
 id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
 f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
 useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
 update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def _rgba(color: str) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    a = int(c[6:8], 16) if len(c) >= 8 else 255
    return f"{r},{g},{b},{a}"


def _outline(color: str) -> str:
    r, g, b, a = (int(v) for v in _rgba(color).split(","))
    return f"{int(r * 0.6)},{int(g * 0.6)},{int(b * 0.6)},{a}"


def categorized_qml(classes: Mapping[int, tuple[str, str]], field: str = "class_code") -> str:
    """A QGIS vector style: polygons categorized by ``field``; ``classes`` maps code -> (name, '#rrggbb')."""
    cats, syms = [], []
    for i, (code, (name, color)) in enumerate(sorted(classes.items())):
        cats.append(
            f'<category value="{int(code)}" label={quoteattr(str(name))} symbol="{i}" render="true"/>'
        )
        syms.append(
            f'<symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">'
            '<layer class="SimpleFill" pass="0" locked="0" enabled="1"><Option type="Map">'
            f'<Option name="color" value="{_rgba(color)}" type="QString"/>'
            f'<Option name="outline_color" value="{_outline(color)}" type="QString"/>'
            '<Option name="outline_style" value="solid" type="QString"/>'
            '<Option name="outline_width" value="0.26" type="QString"/>'
            '<Option name="outline_width_unit" value="MM" type="QString"/>'
            '<Option name="style" value="solid" type="QString"/>'
            "</Option></layer></symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
        'forceraster="0">'
        f"<categories>{''.join(cats)}</categories><symbols>{''.join(syms)}</symbols>"
        "</renderer-v2></qgis>\n"
    )


def write_class_style(
    gpkg: str | Path, classes: Mapping[int, tuple[str, str]], *, layer: str | None = None
) -> None:
    """Store a categorized style (code -> (name, colour)) of the codes present in the layer's ``class_code``
    as the default style of a GeoPackage layer."""
    gpkg = Path(gpkg)
    if gpkg.suffix.lower() != ".gpkg" or not classes:
        return
    layer = layer or gpkg.stem
    try:
        with sqlite3.connect(gpkg) as con:
            row = con.execute(
                "SELECT table_name, column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
            ).fetchone()
            if row is None:
                raise OutputError(f"{gpkg} has no layer {layer!r} to style")
            try:
                present = {int(r[0]) for r in con.execute(f'SELECT DISTINCT class_code FROM "{row[0]}"')}
            except sqlite3.OperationalError:
                present = set(classes)  # no class_code column: keep every class
            used = {c: v for c, v in classes.items() if c in present}
            if not used:
                return
            con.execute(_STYLE_TABLE)
            con.execute(
                "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles')"
            )
            con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (row[0],))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, 'rasterlearn classes', '', '')",
                (row[0], row[1], row[0], categorized_qml(used)),
            )
    except sqlite3.Error as exc:
        raise OutputError(f"Cannot store the class style in {gpkg}: {exc}") from exc
    log.debug("Stored a categorized QGIS style in %s", gpkg)
