"""What must not change: digests of the outputs of a fixed set of runs.

Each run below works on small generated rasters with fixed seeds. Its outputs are reduced to a SHA-256
over what a user sees — pixel values, dtype, shape, grid (transform, CRS), nodata, colour table and the
metadata tags except those naming this run's own temporary paths — and compared with
``tests/data/digests.json``. A refactor must keep every digest; a fix that changes an output updates the
file in the same commit, and the commit says which output changed and why:

    RASTERLEARN_UPDATE_DIGESTS=1 uv run pytest tests/test_regression_digests.py

(Digests cover pixel values rather than file bytes: COG bytes also hold absolute paths and the GDAL
version, which differ between machines without any change in what the output says.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

DIGESTS = Path(__file__).parent / "data" / "digests.json"
UPDATE = os.environ.get("RASTERLEARN_UPDATE_DIGESTS") == "1"
# tags that name the run's own files, or hash their paths and times (they differ on every run)
_PATH_TAGS = {
    "rasterlearn_input",
    "rasterlearn_model",
    "rasterlearn_source",
    "rasterlearn_inputs",
    "rasterlearn_session",
}


def raster_digest(path: Path) -> str:
    """SHA-256 of a raster's pixels, dtype, shape, grid, nodata, colours and path-free tags."""
    h = hashlib.sha256()
    with rasterio.open(path) as ds:
        data = ds.read()
        h.update(
            repr(
                (data.dtype.str, data.shape, tuple(ds.transform), ds.crs.to_wkt() if ds.crs else None)
            ).encode()
        )
        h.update(repr([None if v is None or np.isnan(v) else float(v) for v in ds.nodatavals]).encode())
        h.update(np.ascontiguousarray(data).tobytes())
        with contextlib.suppress(ValueError):
            h.update(repr(sorted(ds.colormap(1).items())).encode())
        tags = {k: v for k, v in ds.tags().items() if k not in _PATH_TAGS and not _is_path(v)}
        h.update(json.dumps(tags, sort_keys=True).encode())
    return h.hexdigest()


def _is_path(value: str) -> bool:
    return value.startswith(("/", "file:")) or ("/tmp" in value) or ("pytest-" in value)


def _features(make_raster: Callable[..., Path]) -> Path:
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, (6, 48, 64)).astype("float32")
    base[:, 20:40, 10:30] += 3.0  # a distinct patch, so clusters and classes are not noise only
    base[:, :6, :6] = np.nan  # a nodata corner
    return make_raster(base, name="features.tif", nodata=float("nan"))


def _run_features(tmp_path: Path, make_raster: Callable[..., Path]) -> dict[str, Path]:
    import geopandas as gpd
    from shapely.geometry import Point, box

    from rasterlearn.features.classify import classify_raster
    from rasterlearn.features.cluster import cluster_raster
    from rasterlearn.features.reduce import reduce_raster
    from rasterlearn.features.similarity import similarity_raster

    feat = _features(make_raster)
    with rasterio.open(feat) as ds:
        crs, t = ds.crs, ds.transform
    x0, y0 = t * (20, 25)
    x1, y1 = t * (50, 8)
    labels = gpd.GeoDataFrame(
        {"cls": ["patch", "patch", "rest", "rest"]},
        geometry=[
            box(*(t * (12, 38)), *(t * (18, 22))),
            box(*(t * (22, 38)), *(t * (28, 30))),
            box(*(t * (40, 46)), *(t * (60, 30))),
            box(*(t * (40, 18)), *(t * (62, 8))),
        ],
        crs=crs,
    )
    refs = gpd.GeoDataFrame(geometry=[Point(x0, y0), Point(x1, y1)], crs=crs)
    out = {
        "pca": reduce_raster(feat, tmp_path / "pca.tif", components=3, blocksize=32).path,
        "kmeans": cluster_raster(feat, tmp_path / "km.tif", clusters=3, blocksize=32).path,
        "similarity": similarity_raster(feat, refs, tmp_path / "sim.tif", blocksize=32).path,
        "classify": classify_raster(
            feat, labels, tmp_path / "cls.tif", attribute="cls", cv="random", folds=2, blocksize=32
        ).path,
    }
    return out


def _run_predict(tmp_path: Path, make_raster: Callable[..., Path]) -> dict[str, Path]:
    from rasterlearn.predict import predict_package
    from tests.test_predict import _package

    rng = np.random.default_rng(12)
    img = rng.integers(1, 250, (3, 96, 112)).astype("uint8")
    img[:, 80:, :20] = 0
    src = make_raster(img, name="image.tif", nodata=0)
    res = predict_package(_package(tmp_path), src, tmp_path / "map.tif", probabilities=tmp_path / "prob.tif")
    return {"predict_map": res.map_path, "predict_probabilities": res.probabilities_path}


def _run_embed(tmp_path: Path, make_raster: Callable[..., Path]) -> dict[str, Path]:
    from rasterlearn.embed import embed

    rng = np.random.default_rng(13)
    src = make_raster(rng.integers(1, 250, (3, 128, 128)).astype("uint8"), name="rgb.tif", nodata=0)
    res = embed(
        src,
        "resnet18",
        output=tmp_path / "emb.tif",
        pretrained=False,
        seed=7,
        size=64,
        stride=64,
        device="cpu",
    )
    return {"embed": res.path}


RUNS = {"features": _run_features, "predict": _run_predict, "embed": _run_embed}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_outputs_keep_their_digests(run: str, tmp_path: Path, make_raster) -> None:
    outputs = RUNS[run](tmp_path, make_raster)
    got = {name: raster_digest(p) for name, p in outputs.items()}
    stored = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    if UPDATE:
        stored.update(got)
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")
        return
    missing = [k for k in got if k not in stored]
    assert not missing, f"no stored digest for {missing}: run with RASTERLEARN_UPDATE_DIGESTS=1 once"
    changed = {k: (stored[k][:12], v[:12]) for k, v in got.items() if stored[k] != v}
    assert not changed, f"outputs changed (stored, now): {changed}"


def test_digest_sees_pixels_and_grid_but_not_paths(tmp_path: Path, make_raster) -> None:
    a = make_raster(np.arange(12, dtype="uint8").reshape(1, 3, 4), name="a.tif")
    b = make_raster(np.arange(12, dtype="uint8").reshape(1, 3, 4), name="b.tif")
    assert raster_digest(a) == raster_digest(b)
    with rasterio.open(b, "r+") as ds:
        ds.update_tags(rasterlearn_input=str(tmp_path / "x.tif"))
    assert raster_digest(a) == raster_digest(b)
    c = make_raster(np.arange(1, 13, dtype="uint8").reshape(1, 3, 4), name="c.tif")
    assert raster_digest(a) != raster_digest(c)
    with rasterio.open(b, "r+") as ds:
        t = ds.transform
        ds.transform = rasterio.Affine(t.a, 0, t.c + 1, 0, t.e, t.f)
    assert raster_digest(a) != raster_digest(b)
