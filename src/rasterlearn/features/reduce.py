"""Dimensionality reduction of any raster (feature rasters or raw bands), fitted on a sample.

PCA (default), IncrementalPCA, TruncatedSVD, FastICA, UMAP and any scikit-learn ``decomposition`` or
``manifold`` estimator with a ``transform`` method, by name, with keyword arguments. The estimator is fitted
on a bounded random sample of valid pixels (optionally standardized) and applied block by block, so memory
does not grow with the raster. Linear methods are stored as plain arrays (mean + projection matrix), other
methods as a hash-checked pickle (see :mod:`rasterlearn.features._io`); both can be applied to another
raster with the same bands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, open_executor
from rasterlearn.errors import ConfigError, InputError
from rasterlearn.features._io import (
    MapSpec,
    Standardizer,
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
from rasterlearn.features._stage import count_blocks as _count_blocks
from rasterlearn.features.sampling import sample_pixels
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader
from rasterlearn.options import ReduceOptions, parse_bands

__all__ = ["REDUCERS", "FittedReducer", "ReduceResult", "fit_reducer", "reduce_raster", "run_reduce"]

log = logging.getLogger(__name__)

REDUCERS = {
    "pca": "sklearn.decomposition.PCA",
    "incremental_pca": "sklearn.decomposition.IncrementalPCA",
    "ipca": "sklearn.decomposition.IncrementalPCA",
    "truncated_svd": "sklearn.decomposition.TruncatedSVD",
    "svd": "sklearn.decomposition.TruncatedSVD",
    "fast_ica": "sklearn.decomposition.FastICA",
    "ica": "sklearn.decomposition.FastICA",
    "umap": "umap.UMAP",
    "isomap": "sklearn.manifold.Isomap",
    "lle": "sklearn.manifold.LocallyLinearEmbedding",
}
_LINEAR = ("PCA", "IncrementalPCA", "TruncatedSVD", "FastICA")
_SLOW_DEFAULT_SAMPLE = 20_000


@dataclass
class FittedReducer:
    """A fitted reduction: ``Y = f(standardize(X))``.

    Linear methods keep ``center`` and ``matrix`` (``Y = (Z - center) @ matrix.T``); others keep the estimator.
    """

    method: str
    params: dict[str, Any]
    components: int
    standardizer: Standardizer
    band_names: list[str]
    center: np.ndarray | None = None
    matrix: np.ndarray | None = None
    estimator: Any | None = None
    explained_variance_ratio: list[float] | None = None
    sample_size: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, bands) -> (n, components) float32, in chunks."""
        if X.shape[1] != len(self.band_names):
            raise InputError(
                f"the reducer was fitted on {len(self.band_names)} bands, the input has {X.shape[1]}"
            )
        out = np.empty((len(X), self.components), "float32")
        i = 0
        for chunk in iter_chunks(X):
            Z = self.standardizer(chunk)
            if self.matrix is not None:
                Y = (Z - self.center) @ self.matrix.T
            elif self.estimator is not None:
                Y = self.estimator.transform(Z)
            else:
                raise ConfigError("this reducer holds neither a projection matrix nor a fitted estimator")
            out[i : i + len(chunk)] = Y
            i += len(chunk)
        return out

    def fingerprint(self) -> str:
        """The journal's fingerprint of the fitted reduction (method, parameters, scaling, projection)."""
        return journal.fingerprint(
            {"m": self.method, "p": self.params, "k": self.components},
            self.standardizer.mean,
            self.standardizer.scale,
            self.center,
            self.matrix,
        )

    def save(self, folder: str | Path) -> Path:
        arrays = {"std_mean": self.standardizer.mean, "std_scale": self.standardizer.scale}
        if self.matrix is not None:
            arrays["matrix"] = self.matrix
            if self.center is not None:
                arrays["center"] = self.center
        meta = {
            "kind": "reduce",
            "method": self.method,
            "params": self.params,
            "components": self.components,
            "band_names": self.band_names,
            "explained_variance_ratio": self.explained_variance_ratio,
            "sample_size": self.sample_size,
            "linear": self.matrix is not None,
            "info": self.info,
            "fingerprint": self.fingerprint(),
        }
        return save_model_folder(folder, meta, arrays, None if self.matrix is not None else self.estimator)

    @classmethod
    def load(cls, folder: str | Path, *, trust: bool = False) -> FittedReducer:
        """Read a reducer folder; one with a pickled estimator needs ``trust=True`` (see ``_io``)."""
        meta, arrays, est = load_model_folder(folder, "reduce", trust=trust)
        return cls(
            meta["method"],
            meta["params"],
            int(meta["components"]),
            Standardizer(arrays["std_mean"], arrays["std_scale"]),
            list(meta["band_names"]),
            arrays.get("center"),
            arrays.get("matrix"),
            est,
            meta.get("explained_variance_ratio"),
            int(meta.get("sample_size", 0)),
            meta.get("info", {}),
        )


def fit_reducer(
    X: np.ndarray,
    *,
    method: str = "pca",
    components: int = 3,
    params: dict[str, Any] | str | None = None,
    standardize: bool = True,
    band_names: Sequence[str] | None = None,
    seed: int = 0,
) -> FittedReducer:
    """Fit a reduction on samples ``X`` (n, bands)."""
    kwargs = parse_kwargs(params, "reduce")
    cls = resolve_estimator(method, ["sklearn.decomposition", "sklearn.manifold"], REDUCERS)
    if not hasattr(cls, "transform"):
        raise ConfigError(
            f"{cls.__name__} cannot transform new pixels (no transform method), so it cannot map a "
            f"raster block by block; use pca, incremental_pca, umap, isomap or lle"
        )
    if components < 1 or (components > X.shape[1] and cls.__name__ in _LINEAR):
        raise ConfigError(
            f"components must be within 1..{X.shape[1]} (the number of bands), got {components}"
        )
    kwargs.setdefault("n_components", components)
    if "random_state" in cls().get_params() and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    std = Standardizer.fit(X, standardize)
    Z = std(X)
    log.info("Fitting %s(%s) on %d samples x %d bands", cls.__name__, kwargs, *X.shape)
    with estimator_errors(cls, kwargs, len(Z)):
        est = cls(**kwargs)
        est.fit(Z)
    names = list(band_names) if band_names is not None else [f"band_{i + 1}" for i in range(X.shape[1])]
    evr = getattr(est, "explained_variance_ratio_", None)
    evr_list = None if evr is None else [float(v) for v in evr]
    center = matrix = None
    name = cls.__name__
    if name in ("PCA", "IncrementalPCA"):
        center = est.mean_.astype("float32")
        matrix = est.components_.astype("float64")
        if getattr(est, "whiten", False):
            matrix = matrix / np.sqrt(est.explained_variance_)[:, None]
        matrix = matrix.astype("float32")
    elif name == "TruncatedSVD":
        center = np.zeros(X.shape[1], "float32")
        matrix = est.components_.astype("float32")
    elif name == "FastICA":
        center = (est.mean_ if getattr(est, "mean_", None) is not None else np.zeros(X.shape[1])).astype(
            "float32"
        )
        matrix = est.components_.astype("float32")
    if matrix is not None:  # check the array form reproduces the estimator
        probe = Z[: min(len(Z), 512)]
        np.testing.assert_allclose((probe - center) @ matrix.T, est.transform(probe), rtol=1e-3, atol=1e-3)
    if evr_list:
        log.info(
            "Explained variance ratio: %s (total %.3f)",
            ", ".join(f"{v:.3f}" for v in evr_list),
            sum(evr_list),
        )
    return FittedReducer(
        method,
        kwargs,
        int(kwargs["n_components"]),
        std,
        names,
        center,
        matrix,
        None if matrix is not None else est,
        evr_list,
        len(X),
        {"estimator": name},
    )


@dataclass
class ReduceResult:
    path: Path
    model_path: Path
    reducer: FittedReducer

    @property
    def explained_variance_ratio(self) -> list[float] | None:
        return self.reducer.explained_variance_ratio


def reduce_raster(
    raster: str | Path,
    output: str | Path,
    *,
    method: str = "pca",
    components: int = 3,
    params: dict[str, Any] | str | None = None,
    standardize: bool = True,
    bands: Sequence[int | str] | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    model: str | Path | None = None,
    model_out: str | Path | None = None,
    blocksize: int = 512,
    resume: bool = True,
    trust_model: bool = False,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
) -> ReduceResult:
    """Reduce a raster to ``components`` bands (float32 COG, NaN nodata where the input is nodata).

    Args:
        raster: any raster (feature raster or raw bands).
        output: the reduced COG.
        method: ``pca`` (default), ``incremental_pca``, ``truncated_svd``, ``fast_ica``, ``umap``, ``isomap``,
            ``lle`` or a class name in ``sklearn.decomposition``/``sklearn.manifold`` with ``transform``.
        components: output bands. params: more estimator arguments (dict or JSON string).
        standardize: scale every band to zero mean / unit variance (sample statistics) before fitting.
        sample_size: valid pixels sampled for fitting (default 100 000; 20 000 for non-linear methods).
        model: apply an already fitted reducer folder instead of fitting (reuse on another raster).
        model_out: where the fitted reducer is saved (default ``OUT.model/`` beside the output).
        resume: continue an interrupted write with the same model.
        trust_model: allow ``model`` to hold a pickled estimator (non-linear methods); unpickling runs code
            from the file, so only for folders you created (CLI ``--trust-model``).
    """
    output = Path(output)
    model_dir = model_dir_for(output, model, model_out)
    check_outputs([raster, model], [output, model_dir])
    new_model = model_dir is not None and not model_dir.exists()
    job, unheld = call_options(
        ReduceOptions,
        {"raster": raster, "output": output, "method": method, "components": components, "params": params}
        | {"no_standardize": not standardize, "bands": bands, "sample_size": sample_size, "seed": seed}
        | {"model": model, "model_out": model_out, "trust_model": trust_model},
    )
    with RasterReader(raster, bands) as reader:
        if model is not None:
            red = FittedReducer.load(model, trust=trust_model)
            check_model_bands("reducer", model, red.band_names, raster, reader.count)
            model_path = Path(model)
        else:
            linear = REDUCERS.get(method.lower(), method).rsplit(".", 1)[-1] in _LINEAR
            n = sample_size or (100_000 if linear else _SLOW_DEFAULT_SAMPLE)
            sample = sample_pixels(reader, n, seed=seed)
            red = fit_reducer(
                sample.values,
                method=method,
                components=components,
                params=params,
                standardize=standardize,
                band_names=reader.band_names,
                seed=seed,
            )
            model_path = model_dir or default_model_dir(output)  # saved once the output is locked
        k = red.components
        tags = {
            "rasterlearn_stage": "reduce",
            "rasterlearn_method": red.method,
            "rasterlearn_params": red.params,
            "rasterlearn_standardize": bool(np.any(red.standardizer.scale != 1)),
            "rasterlearn_explained_variance_ratio": red.explained_variance_ratio,
            "rasterlearn_model": str(Path(model_path).resolve()),
            "rasterlearn_input": str(raster),
        }
        prefix = "pc" if red.info.get("estimator") in ("PCA", "IncrementalPCA") else "component"
        spec = MapSpec(output, "float32", float("nan"), tags, [f"{prefix}_{i + 1}" for i in range(k)])
        write_map(
            reader,
            spec,
            red.transform,
            job=job,
            resolved={**unheld, "model": red.fingerprint()},
            inputs={"model": model_identity(model)},
            blocksize=blocksize,
            resume=resume,
            discard_on_error=[model_path] if new_model else [],
            progress=progress,
            executor=executor,
            on_open=None if model is not None else lambda: red.save(model_path),
        )
    log.info("Wrote %s (%d components of %s)", output, k, red.method)
    return ReduceResult(output, Path(model_path), red)


def count_blocks(raster: str | Path, blocksize: int = 512) -> int:
    """Number of blocks a stage will process (for progress bars)."""
    return _count_blocks(raster, None, blocksize)


def run_reduce(options: ReduceOptions, *, progress: Callable[[int], None] | None = None) -> ReduceResult:
    """``rasterlearn reduce`` as one call: reduce ``options.raster``'s bands into ``options.output``.

    Parses the option texts (``bands``, JSON ``params``), computes the blocks on the executor of
    ``options.scheduler``/``options.workers``, announces the number of blocks to ``progress`` and calls
    :func:`reduce_raster` (fit on a sample, or apply ``options.model``). ``progress(n)`` is called after each
    committed block (cancellation raises from it; a rerun resumes).

    Example::

        from rasterlearn.features import run_reduce
        from rasterlearn.options import ReduceOptions

        res = run_reduce(ReduceOptions(raster="features.tif", output="pca.tif", components=3))
        print(res.path, res.explained_variance_ratio)
    """
    raster, output = options.require("raster", "output")
    bands = parse_bands(options.bands)
    with open_executor(options.scheduler, options.workers) as executor:
        report_total(progress, feature_blocks(options))
        return reduce_raster(
            raster,
            output,
            method=options.method,
            components=options.components,
            params=options.params,
            standardize=not options.no_standardize,
            bands=bands,
            sample_size=options.sample_size,
            seed=options.seed,
            model=options.model,
            model_out=options.model_out,
            trust_model=options.trust_model,
            progress=progress,
            executor=executor,
        )
