"""Class maps on disk: one reader of the classes a raster declares, one description of what a writer stores.

Every producer of a class map (``predict``, ``features`` cluster and classify, the synthetic scenes) writes it
through :class:`rasterlearn.io.writer.BlockWriter` with the colour table and category names of
:func:`class_map_style` (BlockWriter adds the ``.aux.xml`` category names / attribute table and the QGIS
``.qml`` style); rasterlearn's stages also store the full schema as a ``classes`` (predict) or
``rasterlearn_schema`` (classify) tag. Every consumer (``evaluate``, ``assess``, ``vectorize``, the CLI's
polygon styles) reads them back through :func:`raster_class_names`, :func:`map_schema` or
:func:`class_styles`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rasterlearn.labels import ClassInfo, ClassSchema, default_color

__all__ = ["SCHEMA_TAGS", "class_map_style", "class_styles", "map_schema", "raster_class_names"]

log = logging.getLogger(__name__)

SCHEMA_TAGS = ("classes", "rasterlearn_schema")  # predict / train maps; features.classify maps


def class_map_style(
    schema: ClassSchema,
    *,
    nodata: int | None = None,
    nodata_name: str = "nodata",
    nodata_color: str | None = "#000000",
) -> dict[str, Any]:
    """The ``colormap`` and ``category_names`` keyword arguments of :class:`~rasterlearn.io.writer.BlockWriter`
    for a class map of ``schema``; with ``nodata``, that code is named ``nodata_name`` (and coloured
    ``nodata_color`` unless ``None``) too."""
    names = {**({nodata: nodata_name} if nodata is not None else {}), **schema.category_names()}
    colors = {**({nodata: nodata_color} if nodata is not None and nodata_color else {}), **schema.colormap()}
    return {"colormap": colors, "category_names": names}


def _schema_tag(tags: Mapping[str, str], path: str | Path) -> ClassSchema | None:
    for key in SCHEMA_TAGS:
        raw = tags.get(key)
        if raw:
            try:
                return ClassSchema.from_dict(json.loads(raw))
            except Exception:  # a foreign tag of that name
                log.debug("Unreadable %r tag in %s", key, path)
    return None


def _aux_names(path: Path) -> dict[int, str]:
    """Class names from a GDAL ``.aux.xml`` sidecar: category names, else a raster attribute table with a
    name column (value or min/max column + name usage), else a QGIS ``.qml`` paletted style's labels."""
    from xml.sax.saxutils import unescape

    aux = Path(f"{path}.aux.xml")
    if aux.exists():
        text = aux.read_text(encoding="utf-8", errors="replace")
        band = re.search(r"<PAMRasterBand[^>]*band=\"1\"[^>]*>(.*?)</PAMRasterBand>", text, re.S)
        text = band.group(1) if band else text
        block = re.search(r"<CategoryNames>(.*?)</CategoryNames>", text, re.S)
        if block:
            cats = re.findall(r"<Category>(.*?)</Category>|<Category\s*/>", block.group(1), re.S)
            names = {i: unescape(c).strip() for i, c in enumerate(cats) if c.strip()}
            if names:
                return names
        rat = re.search(r"<GDALRasterAttributeTable[^>]*>(.*?)</GDALRasterAttributeTable>", text, re.S)
        if rat:
            fields = re.findall(
                r"<FieldDefn[^>]*>\s*<Name>(.*?)</Name>\s*<Type>(\d+)</Type>\s*<Usage>(\d+)</Usage>",
                rat.group(1),
                re.S,
            )
            usage = [int(u) for _, _, u in fields]
            # GDAL field usages: 2 = name, 5 = min/max (value), 3 = min; else a column called value
            value_col = next((i for i, u in enumerate(usage) if u == 5), None)
            if value_col is None:
                value_col = next((i for i, u in enumerate(usage) if u == 3), None)
            if value_col is None:
                value_col = next((i for i, f in enumerate(fields) if f[0].lower() == "value"), None)
            name_col = next((i for i, u in enumerate(usage) if u == 2), None)
            if value_col is not None and name_col is not None:
                names = {}
                for row in re.findall(r"<Row[^>]*>(.*?)</Row>", rat.group(1), re.S):
                    cells = [unescape(c) for c in re.findall(r"<F>(.*?)</F>|<F\s*/>", row, re.S)]
                    if len(cells) > max(value_col, name_col):
                        try:
                            v = float(cells[value_col])
                        except ValueError:
                            continue
                        if v.is_integer() and cells[name_col].strip():
                            names[int(v)] = cells[name_col].strip()
                if names:
                    return names
    qml = path.with_suffix(".qml")
    if qml.exists():
        text = qml.read_text(encoding="utf-8", errors="replace")
        names = {}
        for entry in re.findall(r"<paletteEntry\b[^>]*>", text):
            value = re.search(r'value="([^"]*)"', entry)
            label = re.search(r'label="([^"]*)"', entry)
            if value and label and label.group(1).strip():
                try:
                    v = float(value.group(1))
                except ValueError:
                    continue
                if v.is_integer():
                    names[int(v)] = unescape(label.group(1), {"&quot;": '"'}).strip()
        return names
    return {}


def raster_class_names(path: str | Path) -> dict[int, str]:
    """The class names a raster declares for its codes, ``{code: name}`` (empty when it names none).

    Sources, in order: rasterlearn's ``classes`` / ``rasterlearn_schema`` tags; GDAL category names or a raster
    attribute table (value + name columns) in the ``.aux.xml`` sidecar; the labels of a QGIS paletted
    ``.qml`` style beside the file. The nodata value's name (e.g. ``0: "nodata"``) is left out.
    """
    import rasterio

    path = Path(path)
    with rasterio.open(path) as ds:
        tags = ds.tags()
        nodata = ds.nodata
    schema = _schema_tag(tags, path)
    names = dict(zip(schema.codes, schema.names, strict=True)) if schema else _aux_names(path)
    if nodata is not None and not math.isnan(nodata) and float(nodata).is_integer():
        names.pop(int(nodata), None)
    return names


def map_schema(path: str | Path) -> ClassSchema | None:
    """The class schema of a map written by rasterlearn (``classes`` or ``rasterlearn_schema`` tag), else one
    built from the class names it declares (:func:`raster_class_names`); ``None`` when it names no classes."""
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
    schema = _schema_tag(tags, path)
    if schema is not None:
        return schema
    names = raster_class_names(path)
    if not names:
        return None
    ignore = 255 if max(names) < 255 else 65535
    return ClassSchema(
        tuple(ClassInfo(c, n, default_color(c)) for c, n in sorted(names.items())),
        ignore,
        0 if 0 in names else None,
    )


def class_styles(map_path: str | Path) -> dict[int, tuple[str, str]]:
    """Code -> (name, '#rrggbb') of a class map: its colour table and its class names (``class_N`` when it
    names none)."""
    import rasterio

    names = raster_class_names(map_path) or {}
    with rasterio.open(map_path) as ds:
        try:
            cmap = ds.colormap(1)
        except ValueError:  # no colour table
            cmap = {}
    codes = set(names) | set(cmap)
    out = {}
    for c in sorted(codes):
        rgba = cmap.get(c)
        color = "#{:02x}{:02x}{:02x}".format(*rgba[:3]) if rgba else default_color(c)
        out[int(c)] = (names.get(c, f"class_{c}"), color)
    return out
