"""GDAL virtual rasters (VRT): band stacks and mosaics described in XML, read by GDAL like any raster.

One writer for every VRT rasterlearn makes — STAC asset stacks (:mod:`rasterlearn.io.stac`) and mosaics of
per-scene maps (:func:`mosaic_vrt`). :func:`vrt_xml` places source bands on a target grid: each source
band's whole extent goes to a destination rectangle in target pixels (fractional rectangles resample).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from affine import Affine

from rasterlearn.errors import InputError
from rasterlearn.io.remote import gdal_path

__all__ = ["VrtBand", "VrtSource", "dst_rect", "mosaic_vrt", "vrt_xml"]

# VRT data type names of the numpy dtypes rasterio reads
VRT_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class VrtSource:
    """Band ``band`` of ``path`` (shape ``(rows, cols)``), placed at ``dst`` = (x, y, width, height) pixels."""

    path: str
    band: int
    shape: tuple[int, int]
    dtype: str
    block: tuple[int, int]
    dst: tuple[float, float, float, float]
    nodata: float | None = None


@dataclass(frozen=True)
class VrtBand:
    """One output band: its type, description, nodata, colour table and its sources, painted in order."""

    dtype: str
    sources: Sequence[VrtSource]
    description: str | None = None
    nodata: float | None = None
    colormap: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


def vrt_xml(
    width: int,
    height: int,
    crs_wkt: str,
    transform: Affine,
    bands: Sequence[VrtBand],
    *,
    metadata: Mapping[str, str] | None = None,
    resampling: str = "nearest",
) -> str:
    """The XML of a VRT of ``bands`` on the grid (``width``, ``height``, ``crs_wkt``, ``transform``)."""
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = crs_wkt
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in transform.to_gdal())
    if metadata:
        md = ET.SubElement(root, "Metadata")
        for k, v in metadata.items():
            ET.SubElement(md, "MDI", key=k).text = v
    for i, band in enumerate(bands, start=1):
        vb = ET.SubElement(root, "VRTRasterBand", dataType=VRT_TYPES[band.dtype], band=str(i))
        if band.description:
            ET.SubElement(vb, "Description").text = band.description
        if band.nodata is not None:
            ET.SubElement(vb, "NoDataValue").text = repr(float(band.nodata))
        if band.colormap:
            ET.SubElement(vb, "ColorInterp").text = "Palette"
            ct = ET.SubElement(vb, "ColorTable")
            for code in range(max(band.colormap) + 1):
                rgba = (*band.colormap.get(code, (0, 0, 0, 0)), 255)
                ET.SubElement(ct, "Entry", c1=str(rgba[0]), c2=str(rgba[1]), c3=str(rgba[2]), c4=str(rgba[3]))
        for s in band.sources:
            src = ET.SubElement(vb, "ComplexSource", resampling=resampling)
            ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = gdal_path(s.path)
            ET.SubElement(src, "SourceBand").text = str(s.band)
            ET.SubElement(
                src,
                "SourceProperties",
                RasterXSize=str(s.shape[1]),
                RasterYSize=str(s.shape[0]),
                DataType=VRT_TYPES[s.dtype],
                BlockXSize=str(s.block[1]),
                BlockYSize=str(s.block[0]),
            )
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(s.shape[1]), ySize=str(s.shape[0]))
            ET.SubElement(
                src,
                "DstRect",
                xOff=repr(float(s.dst[0])),
                yOff=repr(float(s.dst[1])),
                xSize=repr(float(s.dst[2])),
                ySize=repr(float(s.dst[3])),
            )
            if s.nodata is not None:
                ET.SubElement(src, "NODATA").text = repr(float(s.nodata))
    return ET.tostring(root, encoding="unicode")


def dst_rect(
    bounds: Any, left: float, top: float, res: float, res_y: float | None = None
) -> tuple[float, float, float, float]:
    """Where a source with ``bounds`` (left, bottom, right, top) lands on a grid at ``left``, ``top`` with pixel
    size ``res`` (``res_y`` for rows when it differs): (x, y, width, height) in target pixels."""
    ry = res if res_y is None else res_y
    sl, sb, sr, st = bounds
    return ((sl - left) / res, (top - st) / ry, (sr - sl) / res, (st - sb) / ry)


@dataclass(frozen=True)
class _Map:
    path: str
    crs: Any
    res: tuple[float, float]
    count: int
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    bounds: Any
    shape: tuple[int, int]
    block: tuple[int, int]
    colormap: dict[int, tuple[int, ...]]
    descriptions: tuple[str | None, ...]


def _describe(path: str) -> _Map:
    with rasterio.open(gdal_path(path)) as ds:
        try:
            cmap = dict(ds.colormap(1))
        except ValueError:  # no colour table
            cmap = {}
        return _Map(
            path,
            ds.crs,
            ds.res,
            ds.count,
            tuple(ds.dtypes),
            tuple(ds.nodatavals),
            ds.bounds,
            ds.shape,
            tuple(ds.block_shapes[0]),
            cmap,
            tuple(ds.descriptions),
        )


def mosaic_vrt(paths: Sequence[str | Path], dest: str | Path) -> Path:
    """Write a VRT mosaic of rasters on one CRS and pixel size (per-scene maps) to ``dest``.

    Later paths paint over earlier ones where they overlap (valid pixels only: nodata is transparent). The
    colour table and band descriptions of the first raster are carried over, so QGIS shows the mosaic like
    the maps. Written to a temporary name and renamed.

    Raises:
        InputError: no input, or an input in another CRS, band count or pixel size (named).
    """
    if not paths:
        raise InputError("Nothing to mosaic: no finished map")
    maps = [_describe(str(p)) for p in paths]
    first = maps[0]
    for m in maps[1:]:
        same_res = all(abs(a - b) <= 1e-9 * abs(b) for a, b in zip(m.res, first.res, strict=True))
        if m.crs != first.crs or m.count != first.count or not same_res:
            raise InputError(
                f"Cannot mosaic {m.path} with {first.path}: CRS, band count or pixel size differ "
                f"({m.crs}, {m.count} bands, {m.res} vs {first.crs}, {first.count} bands, {first.res}); "
                f"mosaic maps of one projection and resolution"
            )
    left = min(m.bounds[0] for m in maps)
    bottom = min(m.bounds[1] for m in maps)
    right = max(m.bounds[2] for m in maps)
    top = max(m.bounds[3] for m in maps)
    rx, ry = first.res
    bands = [
        VrtBand(
            first.dtypes[b],
            [
                VrtSource(
                    m.path,
                    b + 1,
                    m.shape,
                    m.dtypes[b],
                    m.block,
                    dst_rect(m.bounds, left, top, rx, ry),
                    m.nodata[b],
                )
                for m in maps
            ],
            description=first.descriptions[b],
            nodata=first.nodata[b],
            colormap=first.colormap if b == 0 else {},
        )
        for b in range(first.count)
    ]
    width, height = round((right - left) / rx), round((top - bottom) / ry)
    xml = vrt_xml(width, height, first.crs.to_wkt(), Affine(rx, 0, left, 0, -ry, top), bands)
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(xml)
    tmp.replace(dest)
    return dest
