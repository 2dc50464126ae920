"""Remote and virtual rasters: URLs and GDAL virtual paths, read with the settings cloud COGs need.

Every reader accepts, besides local files, what GDAL's virtual file systems read:

* ``https://…`` / ``http://…`` (read through ``/vsicurl/`` with HTTP range requests),
* ``s3://bucket/key``, ``gs://bucket/key``, ``az://container/blob`` (``/vsis3/``, ``/vsigs/``, ``/vsiaz/``;
  credentials from the usual environment variables or configuration files of each cloud),
* any ``/vsi…/`` path as written (``/vsicurl/https://…``, ``/vsizip//data/a.zip/b.tif``, ``/vsimem/…``).

:func:`gdal_path` turns a URL into the GDAL path. :func:`apply_cloud_defaults` sets the configuration the
GDAL documentation recommends for reading cloud-optimized GeoTIFFs — no directory listing on open, only
raster extensions probed, retries on transient HTTP errors, merged range requests and a bounded cache —
as *defaults*: a value already in the environment (the user's own tuning) always wins.

Standard library only, besides :func:`rasterlearn._util.is_virtual` (the settings are environment variables GDAL reads as configuration options, so they
also reach reader threads and, when set on a worker, that worker's process).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rasterlearn._util import is_virtual

__all__ = ["CLOUD_DEFAULTS", "apply_cloud_defaults", "gdal_path", "is_remote", "is_virtual"]

log = logging.getLogger(__name__)

_SCHEMES = {
    "http://": "/vsicurl/",
    "https://": "/vsicurl/",
    "s3://": "/vsis3/",
    "gs://": "/vsigs/",
    "az://": "/vsiaz/",
}

#: GDAL configuration for cloud reads, applied with :func:`apply_cloud_defaults` (never overriding).
CLOUD_DEFAULTS: dict[str, str] = {
    # opening a COG must not list the bucket/folder (one GET instead of thousands of keys)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # probe only these side files (no .aux.xml / .ovr / .msk round trips for every open)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt,.VRT,.jp2,.JP2,.img,.zip,.json,.xml",
    "GDAL_HTTP_MAX_RETRY": "4",  # 429 / 5xx / connection resets
    "GDAL_HTTP_RETRY_DELAY": "1",  # seconds, doubled at each retry by GDAL
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_TIMEOUT": "60",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(32 * 2**20),  # bytes per file handle
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 * 2**20),  # bytes, global
}


def is_remote(path: object) -> bool:
    """True when reading ``path`` goes over the network (a URL or a network ``/vsi`` handler)."""
    s = str(path)
    if any(s.startswith(k) for k in _SCHEMES) or "://" in s:
        return True
    return s.startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift"))


def gdal_path(path: str | Path) -> str:
    """The path GDAL opens for ``path``: URLs become ``/vsicurl/``, ``/vsis3/``, … paths; others unchanged.

    >>> gdal_path("s3://bucket/scene.tif")
    '/vsis3/bucket/scene.tif'
    >>> gdal_path("https://example.com/a.tif")
    '/vsicurl/https://example.com/a.tif'
    """
    s = str(path)
    for scheme, handler in _SCHEMES.items():
        if s.startswith(scheme):
            return handler + (s if handler == "/vsicurl/" else s[len(scheme) :])
    return s


_applied = False


def apply_cloud_defaults() -> dict[str, str]:
    """Set :data:`CLOUD_DEFAULTS` in the environment where not already set; returns what was set."""
    global _applied
    set_now = {}
    for key, value in CLOUD_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            set_now[key] = value
    if set_now and not _applied:
        log.debug("GDAL cloud-read defaults set: %s", ", ".join(f"{k}={v}" for k, v in set_now.items()))
    _applied = True
    return set_now
