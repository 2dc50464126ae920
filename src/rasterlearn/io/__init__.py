"""Thin I/O layer: raster reading, vector reading, block-wise COG writing."""

from rasterlearn.io.raster import BandStats, RasterBlock, RasterReader, band_statistics, open_raster
from rasterlearn.io.vector import check_overlap, read_vector, write_vector
from rasterlearn.io.writer import BlockWriter, write_array

__all__ = [
    "BandStats",
    "BlockWriter",
    "RasterBlock",
    "RasterReader",
    "band_statistics",
    "check_overlap",
    "open_raster",
    "read_vector",
    "write_array",
    "write_vector",
]
