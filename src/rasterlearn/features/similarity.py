"""Cosine-similarity maps to reference features (points, or polygons sampled into pixels).

References are read from any vector layer, reprojected to the raster's CRS, and sampled: a point gives its
pixel, a polygon its pixels (all, or a fraction with ``rate``). ``mode="mean"`` compares every pixel with
the mean reference vector; ``mode="max"`` with each reference (a point, or a polygon's mean vector) and
keeps the highest similarity. Output: float32 in [-1, 1], NaN where the input is nodata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, open_executor
from rasterlearn.errors import ConfigError
from rasterlearn.features._io import MapSpec, Standardizer, write_map
from rasterlearn.features._stage import (
    call_options,
    feature_blocks,
    input_files,
)
from rasterlearn.features.sampling import sample_pixels, sample_vector
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader
from rasterlearn.options import SimilarityOptions, parse_bands

__all__ = ["SimilarityResult", "cosine_similarity", "run_similarity", "similarity_raster"]

log = logging.getLogger(__name__)


def cosine_similarity(X: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(n, d) pixels against (r, d) references -> (n, r) cosine similarities (0 for zero vectors)."""
    xn = np.linalg.norm(X, axis=1, keepdims=True)
    rn = np.linalg.norm(refs, axis=1, keepdims=True)
    Xu = np.divide(X, xn, out=np.zeros_like(X, dtype="float32"), where=xn > 0)
    Ru = np.divide(refs, rn, out=np.zeros_like(refs, dtype="float32"), where=rn > 0)
    return Xu @ Ru.T


@dataclass
class SimilarityResult:
    path: Path
    references: np.ndarray  # (r, bands) reference vectors (in the compared space)
    n_pixels: int
    n_features: int


def similarity_raster(
    raster: str | Path,
    references: str | Path | Any,
    output: str | Path,
    *,
    mode: Literal["mean", "max"] = "mean",
    bands: Sequence[int | str] | None = None,
    layer: str | int | None = None,
    rate: float = 1.0,
    max_per_feature: int = 1000,
    standardize: bool = False,
    sample_size: int = 100_000,
    seed: int = 0,
    blocksize: int = 512,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
) -> SimilarityResult:
    """Write a cosine-similarity map of the raster to its reference features.

    Args:
        raster: any raster (usually a feature raster from ``rasterlearn embed``).
        references: vector file (or GeoDataFrame) of points and/or polygons, any CRS.
        output: float32 COG.
        mode: ``mean`` (one mean reference vector) or ``max`` (best match over references).
        rate, max_per_feature: polygon sampling (fraction of pixels, cap per polygon).
        standardize: z-score bands with sampled raster statistics before comparing (centres the space, so
            similarity reflects deviations from the scene average rather than the common offset).
    """
    if mode not in ("mean", "max"):
        raise ConfigError(f"mode must be 'mean' or 'max', got {mode!r}")
    output = Path(output)
    check_outputs([raster, references], [output])
    job, unheld = call_options(
        SimilarityOptions,
        {"raster": raster, "references": references, "output": output, "mode": mode, "rate": rate}
        | {"max_per_feature": max_per_feature, "standardize": standardize, "layer": layer, "bands": bands}
        | {"seed": seed},
    )
    with RasterReader(raster, bands) as reader:
        vs = sample_vector(
            reader, references, layer=layer, rate=rate, max_per_feature=max_per_feature, seed=seed
        )
        if standardize:
            std = Standardizer.fit(sample_pixels(reader, sample_size, seed=seed).values, True)
        else:
            std = Standardizer.fit(vs.values, False)
        Z = std(vs.values)
        if mode == "mean":
            refs = Z.mean(axis=0, keepdims=True)
        else:
            refs = np.stack([Z[vs.feature == f].mean(axis=0) for f in np.unique(vs.feature)])
        log.info(
            "Similarity to %s: %d reference pixels from %d features, %d reference vector(s), mode %s",
            references if not hasattr(references, "geometry") else "GeoDataFrame",
            len(vs),
            vs.n_features,
            len(refs),
            mode,
        )

        def fn(X: np.ndarray) -> np.ndarray:
            s = cosine_similarity(std(X), refs)
            return (s.mean(axis=1) if mode == "mean" else s.max(axis=1))[:, None]

        tags = {
            "rasterlearn_stage": "similarity",
            "rasterlearn_mode": mode,
            "rasterlearn_input": str(raster),
            "rasterlearn_references": str(references)
            if not hasattr(references, "geometry")
            else "GeoDataFrame",
            "rasterlearn_reference_pixels": len(vs),
            "rasterlearn_reference_features": vs.n_features,
            "rasterlearn_standardize": standardize,
        }
        write_map(
            reader,
            MapSpec(output, "float32", float("nan"), tags, ["cosine_similarity"]),
            fn,
            job=job,
            resolved={**unheld, "references": journal.fingerprint({}, std.mean, std.scale, refs)},
            inputs=input_files(references=references),
            blocksize=blocksize,
            resume=True,  # an interrupted map with the same references continues
            discard_on_error=[],
            progress=progress,
            executor=executor,
        )
    return SimilarityResult(output, refs, len(vs), vs.n_features)


def run_similarity(
    options: SimilarityOptions, *, progress: Callable[[int], None] | None = None
) -> SimilarityResult:
    """``rasterlearn similarity`` as one call: the cosine-similarity map of ``options.raster`` to the
    features of ``options.references``, written to ``options.output``.

    Parses ``bands``, computes the blocks on the executor of ``options.scheduler``/``options.workers``,
    announces the number of blocks to ``progress`` and calls :func:`similarity_raster`. ``progress(n)`` is
    called after each committed block (cancellation raises from it; a rerun resumes).

    Example::

        from rasterlearn.features import run_similarity
        from rasterlearn.options import SimilarityOptions

        res = run_similarity(SimilarityOptions(raster="features.tif", references="pts.gpkg", output="sim.tif"))
    """
    raster, references, output = options.require("raster", "references", "output")
    bands = parse_bands(options.bands)
    with open_executor(options.scheduler, options.workers) as executor:
        report_total(progress, feature_blocks(options))
        return similarity_raster(
            raster,
            references,
            output,
            mode=options.mode,
            bands=bands,
            layer=options.layer,
            rate=options.rate,
            max_per_feature=options.max_per_feature,
            standardize=options.standardize,
            seed=options.seed,
            progress=progress,
            executor=executor,
        )
