"""One exception hierarchy for the whole package.

Every error raised on purpose by rasterlearn derives from :class:`RasterlearnError` and, where one fits,
also from the matching built-in (``ValueError``, ``FileNotFoundError``, ``OSError``), so callers may catch
either. Messages name the offending input and say how to fix it. The CLI prints them without a traceback
(exit code 2); ``-v`` shows the traceback.
"""

from __future__ import annotations

__all__ = [
    "AttributeNotFoundError",
    "CRSError",
    "ConfigError",
    "EmptyInputError",
    "InputError",
    "InputNotFoundError",
    "JobCancelledError",
    "ModelError",
    "NoOverlapError",
    "OutputError",
    "RasterlearnError",
    "ReadError",
]


class RasterlearnError(Exception):
    """Base class of every error rasterlearn raises on purpose."""


class InputError(RasterlearnError, ValueError):
    """An argument, file content or option value is not usable."""


class ConfigError(InputError):
    """A configuration file or option set is invalid (unknown key, wrong type, bad combination)."""


class InputNotFoundError(RasterlearnError, FileNotFoundError):
    """An input file or folder does not exist."""


class ReadError(RasterlearnError, OSError):
    """An input exists but cannot be opened or read by GDAL/OGR."""


class OutputError(RasterlearnError, OSError):
    """An output cannot be written (exists and overwrite not allowed, folder missing, disk error)."""


class CRSError(InputError):
    """A coordinate reference system is missing, unknown or unsuitable."""


class NoOverlapError(InputError):
    """Two inputs (labels and raster, AOI and raster, ...) do not overlap."""


class EmptyInputError(InputError):
    """An input has nothing in it (an empty vector layer, no valid pixels, no chips)."""


class AttributeNotFoundError(InputError):
    """A named attribute (column) is missing from a vector layer."""


class ModelError(RasterlearnError, ValueError):
    """A model name, checkpoint or model package is invalid or incompatible with the input."""


class JobCancelledError(RasterlearnError):
    """A job was asked to stop (SIGTERM, Ctrl-C, a Cancel button) and stopped between blocks.

    Its resumable state is kept and nothing is left under the final output names; running the same job
    again resumes it.
    """
