"""Shared fixtures: tiny rasters written on the fly, and the real sample data folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project; tests using it skip when it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real sample data not found at {SHARED_DATA} (only present on developer machines and CI)"
        )
    return SHARED_DATA


RasterFactory = Callable[..., Path]


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    **profile: Any,
) -> Path:
    """Write ``data`` ((bands,) rows, cols) as a GeoTIFF; default grid: 10 m pixels in UTM 33N."""
    arr = data if data.ndim == 3 else data[np.newaxis]
    transform = transform or Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    prof = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> RasterFactory:
    """Factory ``make_raster(data, name="r.tif", **write_tif options) -> path``."""
    counter = iter(range(10_000))

    def factory(data: np.ndarray, name: str | None = None, **kwargs: Any) -> Path:
        return write_tif(tmp_path / (name or f"raster_{next(counter)}.tif"), data, **kwargs)

    return factory


def coord_image(height: int, width: int, dtype: str = "uint16") -> np.ndarray:
    """A 2-band image whose pixels encode their own (row, col): exact round-trip checks."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols]).astype(dtype)


@pytest.fixture
def coord_raster(make_raster: RasterFactory) -> Path:
    """A 37 x 53 px, 2-band uint16 raster whose band 1 = row and band 2 = col (odd, non-square)."""
    return make_raster(coord_image(37, 53), name="coords.tif", nodata=65535)


# Shared machines are slow and noisy: no per-example deadline for property-based tests.
try:
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("rasterlearn", deadline=None)
    _hyp_settings.load_profile("rasterlearn")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def dask_executor() -> Any:
    """One 2-worker dask LocalCluster (processes, one thread each) shared by the distributed tests: starting
    one costs ~20 s, so the test files do not start one each."""
    pytest.importorskip("distributed", reason="the dask extra (distributed) is not installed")
    from rasterlearn.engine.executor import DaskExecutor, open_executor

    with open_executor(workers=2) as ex:
        assert isinstance(ex, DaskExecutor)
        yield ex
