"""Unsupervised clustering of any raster, fitted on a sample and assigned block by block.

k-means (default), MiniBatchKMeans, scikit-learn's HDBSCAN and any ``sklearn.cluster``/``sklearn.mixture``
estimator by name. Every fitted clustering is reduced to cluster centres (the estimator's own centres, or
the mean of the sample pixels of each cluster), and pixels are assigned to the nearest centre: exact for
k-means, an approximate ``predict`` for methods that have none (HDBSCAN, agglomerative, ...). The map is
uint8 (uint16 beyond 254 clusters) with codes 1..K, 0 = nodata, a colour table and category names; pixel
counts per cluster are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write_json
from rasterlearn.class_maps import class_map_style
from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, open_executor
from rasterlearn.errors import ConfigError, EmptyInputError, InputError
from rasterlearn.features._io import (
    MapSpec,
    Standardizer,
    block_windows,
    check_model_bands,
    default_model_dir,
    estimator_errors,
    iter_chunks,
    load_model_folder,
    model_dir_for,
    parse_kwargs,
    resolve_estimator,
    save_model_folder,
    write_map,
)
from rasterlearn.features._stage import (
    call_options,
    feature_blocks,
    model_identity,
)
from rasterlearn.features.sampling import sample_pixels
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassInfo, ClassSchema, default_color
from rasterlearn.options import ClusterOptions, parse_bands

__all__ = [
    "CLUSTERERS",
    "ClusterResult",
    "FittedClusters",
    "cluster_raster",
    "fit_clusters",
    "nearest_centre",
    "run_cluster",
]

log = logging.getLogger(__name__)

CLUSTERERS = {
    "kmeans": "sklearn.cluster.KMeans",
    "k_means": "sklearn.cluster.KMeans",
    "minibatch_kmeans": "sklearn.cluster.MiniBatchKMeans",
    "mini_batch_kmeans": "sklearn.cluster.MiniBatchKMeans",
    "hdbscan": "sklearn.cluster.HDBSCAN",
    "gmm": "sklearn.mixture.GaussianMixture",
    "gaussian_mixture": "sklearn.mixture.GaussianMixture",
    "agglomerative": "sklearn.cluster.AgglomerativeClustering",
    "birch": "sklearn.cluster.Birch",
}
_K_PARAM = ("n_clusters", "n_components")


def nearest_centre(Z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row of ``Z``, in chunks."""
    out = np.empty(len(Z), "int64")
    cn = (centres.astype("float64") ** 2).sum(axis=1)
    i = 0
    for chunk in iter_chunks(Z, 32768):
        d = cn[None, :] - 2.0 * (chunk.astype("float64") @ centres.T.astype("float64"))
        out[i : i + len(chunk)] = d.argmin(axis=1)
        i += len(chunk)
    return out


@dataclass
class FittedClusters:
    """Cluster centres in standardized space; code of centre ``i`` is ``i + 1``."""

    method: str
    params: dict[str, Any]
    standardizer: Standardizer
    centres: np.ndarray
    band_names: list[str]
    sample_sizes: list[int]
    exact: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.centres)

    @property
    def dtype(self) -> str:
        return "uint8" if self.k <= 254 else "uint16"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Cluster codes 1..K for pixels (n, bands)."""
        if X.shape[1] != len(self.band_names):
            raise InputError(
                f"the clustering was fitted on {len(self.band_names)} bands, input has {X.shape[1]}"
            )
        return nearest_centre(self.standardizer(X), self.centres) + 1

    def fingerprint(self) -> str:
        """The journal's fingerprint of the fitted clustering (method, parameters, scaling, centres)."""
        return journal.fingerprint(
            [self.method, self.params], self.standardizer.mean, self.standardizer.scale, self.centres
        )

    def save(self, folder: str | Path) -> Path:
        meta = {
            "kind": "cluster",
            "method": self.method,
            "params": self.params,
            "band_names": self.band_names,
            "k": self.k,
            "sample_sizes": self.sample_sizes,
            "exact": self.exact,
            "info": self.info,
            "fingerprint": self.fingerprint(),
        }
        arrays = {
            "std_mean": self.standardizer.mean,
            "std_scale": self.standardizer.scale,
            "centres": self.centres,
        }
        return save_model_folder(folder, meta, arrays)

    @classmethod
    def load(cls, folder: str | Path) -> FittedClusters:
        meta, arrays, _ = load_model_folder(folder, "cluster")
        return cls(
            meta["method"],
            meta["params"],
            Standardizer(arrays["std_mean"], arrays["std_scale"]),
            arrays["centres"],
            list(meta["band_names"]),
            list(meta["sample_sizes"]),
            bool(meta["exact"]),
            meta.get("info", {}),
        )


def fit_clusters(
    X: np.ndarray,
    *,
    method: str = "kmeans",
    clusters: int | None = 8,
    params: dict[str, Any] | str | None = None,
    standardize: bool = True,
    band_names: Sequence[str] | None = None,
    seed: int = 0,
) -> FittedClusters:
    """Fit a clustering on samples ``X`` (n, bands) and reduce it to centres."""
    kwargs = parse_kwargs(params, "cluster")
    cls = resolve_estimator(method, ["sklearn.cluster", "sklearn.mixture"], CLUSTERERS)
    defaults = cls().get_params()
    if clusters is not None:
        for p in _K_PARAM:
            if p in defaults:
                kwargs.setdefault(p, int(clusters))
                break
        else:
            log.info(
                "%s chooses the number of clusters itself; --clusters %d is ignored", cls.__name__, clusters
            )
    if "random_state" in defaults:
        kwargs.setdefault("random_state", seed)
    if cls.__name__ == "KMeans":
        kwargs.setdefault("n_init", "auto")
    if cls.__name__ == "HDBSCAN":
        kwargs.setdefault("copy", True)  # our sample is reused for the centres
        kwargs.setdefault("min_cluster_size", max(5, len(X) // 200))
    std = Standardizer.fit(X, standardize)
    Z = std(X)
    log.info("Fitting %s(%s) on %d samples x %d bands", cls.__name__, kwargs, *X.shape)
    with estimator_errors(cls, kwargs, len(Z)):
        est = cls(**kwargs)
        labels = est.fit_predict(Z) if hasattr(est, "fit_predict") else est.fit(Z).predict(Z)
    labels = np.asarray(labels)
    centres = getattr(est, "cluster_centers_", None)
    if centres is None:
        centres = getattr(est, "means_", None)
    exact = cls.__name__ in ("KMeans", "MiniBatchKMeans")
    if centres is None or len(centres) != len(np.unique(labels[labels >= 0])):
        ids = np.unique(labels[labels >= 0])
        if ids.size == 0:
            raise EmptyInputError(
                f"{cls.__name__} found no cluster in {len(Z)} samples (all noise); change its "
                f"parameters (e.g. a smaller min_cluster_size)"
            )
        centres = np.stack([Z[labels == i].mean(axis=0) for i in ids])
        remap = {int(i): n for n, i in enumerate(ids)}
        labels = np.array([remap.get(int(v), -1) for v in labels])
    noise = int((labels < 0).sum())
    if noise:
        log.info(
            "%s marked %d of %d samples as noise; every pixel is assigned to its nearest cluster centre",
            cls.__name__,
            noise,
            len(labels),
        )
    sizes = [int((labels == i).sum()) for i in range(len(centres))]
    names = list(band_names) if band_names is not None else [f"band_{i + 1}" for i in range(X.shape[1])]
    if len(centres) > 65534:
        raise ConfigError(f"{len(centres)} clusters do not fit a uint16 map")
    return FittedClusters(
        method,
        kwargs,
        std,
        np.asarray(centres, "float32"),
        names,
        sizes,
        exact,
        {"estimator": cls.__name__, "noise_samples": noise},
    )


@dataclass
class ClusterResult:
    path: Path
    model_path: Path
    report_path: Path
    clusters: FittedClusters
    sizes: dict[int, int]


def cluster_raster(
    raster: str | Path,
    output: str | Path,
    *,
    method: str = "kmeans",
    clusters: int | None = 8,
    params: dict[str, Any] | str | None = None,
    standardize: bool = True,
    bands: Sequence[int | str] | None = None,
    sample_size: int = 100_000,
    seed: int = 0,
    model: str | Path | None = None,
    model_out: str | Path | None = None,
    blocksize: int = 512,
    resume: bool = True,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
) -> ClusterResult:
    """Cluster a raster into a class map (codes 1..K, 0 = nodata) with colour table and category names.

    Writes ``OUT.tif``, the fitted centres in ``OUT.model/`` (or ``model_out``) and ``OUT.clusters.json`` with
    the pixel count of every cluster. ``model`` applies an existing clustering (another raster, same bands).
    """
    output = Path(output)
    model_dir = model_dir_for(output, model, model_out)
    report = output.with_name(f"{output.stem}.clusters.json")
    check_outputs([raster, model], [output, model_dir, report])
    new_model = model_dir is not None and not model_dir.exists()
    if model is None and clusters is not None and clusters < 1:
        raise ConfigError(f"the number of clusters (--clusters) must be at least 1, got {clusters}")
    job, unheld = call_options(
        ClusterOptions,
        {"raster": raster, "output": output, "method": method, "clusters": clusters, "params": params}
        | {"no_standardize": not standardize, "bands": bands, "sample_size": sample_size, "seed": seed}
        | {"model": model, "model_out": model_out},
    )
    with RasterReader(raster, bands) as reader:
        if model is not None:
            fc = FittedClusters.load(model)
            check_model_bands("clustering", model, fc.band_names, raster, reader.count)
            model_path = Path(model)
        else:
            sample = sample_pixels(reader, sample_size, seed=seed)
            fc = fit_clusters(
                sample.values,
                method=method,
                clusters=clusters,
                params=params,
                standardize=standardize,
                band_names=reader.band_names,
                seed=seed,
            )
            model_path = model_dir or default_model_dir(output)  # saved once the output is locked
        counts = _PixelCounts(fc.k)
        resumed = write_map(
            reader,
            _map_spec(fc, raster, model_path, output),
            lambda X: fc.predict(X)[:, None],
            job=job,
            resolved={**unheld, "model": fc.fingerprint()},
            inputs={"model": model_identity(model)},
            blocksize=blocksize,
            resume=resume,
            discard_on_error=[model_path] if new_model else [],
            progress=progress,
            executor=executor,
            on_block=counts,
            on_open=None if model is not None else lambda: fc.save(model_path),
        )
    if resumed:  # blocks written before the interruption were not counted: count from the finished map
        counts.recount(output, blocksize)
    sizes = counts.sizes()
    _write_report(report, fc, sizes, model_path)
    log.info("Cluster sizes (pixels): %s", ", ".join(f"{k}: {v}" for k, v in sizes.items()))
    return ClusterResult(output, Path(model_path), report, fc, sizes)


def run_cluster(options: ClusterOptions, *, progress: Callable[[int], None] | None = None) -> ClusterResult:
    """``rasterlearn cluster`` as one call: cluster ``options.raster`` into the class map ``options.output``.

    Parses the option texts (``bands``, JSON ``params``), computes the blocks on the executor of
    ``options.scheduler``/``options.workers``, announces the number of blocks to ``progress`` and calls
    :func:`cluster_raster` (fit on a sample, or apply ``options.model``); also writes ``OUT.clusters.json``.
    ``progress(n)`` is called after each committed block (cancellation raises from it; a rerun resumes).

    Example::

        from rasterlearn.features import run_cluster
        from rasterlearn.options import ClusterOptions

        res = run_cluster(ClusterOptions(raster="features.tif", output="clusters.tif", clusters=6))
        print(res.sizes)
    """
    raster, output = options.require("raster", "output")
    bands = parse_bands(options.bands)
    with open_executor(options.scheduler, options.workers) as executor:
        report_total(progress, feature_blocks(options))
        return cluster_raster(
            raster,
            output,
            method=options.method,
            clusters=options.clusters,
            params=options.params,
            standardize=not options.no_standardize,
            bands=bands,
            sample_size=options.sample_size,
            seed=options.seed,
            model=options.model,
            model_out=options.model_out,
            progress=progress,
            executor=executor,
        )


class _PixelCounts:
    """Pixels per cluster code (index 0: nodata), accumulated block by block as the map is written."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.counts = np.zeros(k + 1, "int64")

    def __call__(self, out: np.ndarray, valid: np.ndarray) -> None:
        self.counts[:] += np.bincount(out[0][valid].astype("int64"), minlength=self.k + 1)[: self.k + 1]

    def recount(self, path: Path, blocksize: int) -> None:
        """Count again from the finished map ``path`` (a resumed run did not see every block)."""
        self.counts[:] = 0
        with RasterReader(path) as done:
            for win in block_windows(done.grid, blocksize):
                b = done.read(win)
                self(b.data, b.valid)

    def sizes(self) -> dict[int, int]:
        """``{code: pixels}`` for the codes 1..K."""
        return {c: int(self.counts[c]) for c in range(1, self.k + 1)}


def _map_spec(fc: FittedClusters, raster: str | Path, model_path: Path, output: Path) -> MapSpec:
    """The cluster map: codes 1..K (0 = nodata) with colour table, category names and provenance tags."""
    cluster_classes = ClassSchema(
        tuple(ClassInfo(c, f"cluster {c}", default_color(c)) for c in range(1, fc.k + 1)), 0, None
    )
    tags = {
        "rasterlearn_stage": "cluster",
        "rasterlearn_method": fc.method,
        "rasterlearn_params": fc.params,
        "rasterlearn_model": str(Path(model_path).resolve()),
        "rasterlearn_input": str(raster),
        "rasterlearn_assignment": "nearest centre" + ("" if fc.exact else " (approximate predict)"),
    }
    return MapSpec(output, fc.dtype, 0, tags, ["cluster"], class_map_style(cluster_classes, nodata=0))


def _write_report(report: Path, fc: FittedClusters, sizes: dict[int, int], model_path: Path) -> None:
    """``OUT.clusters.json``: the clustering and the pixel count of every cluster."""
    atomic_write_json(
        report,
        {
            "method": fc.method,
            "estimator": fc.info.get("estimator"),
            "k": fc.k,
            "params": fc.params,
            "exact_assignment": fc.exact,
            "pixels_per_cluster": {str(k): v for k, v in sizes.items()},
            "sample_per_cluster": fc.sample_sizes,
            "model": str(model_path),
        },
        default=str,
    )
