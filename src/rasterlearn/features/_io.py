"""Shared plumbing of the feature-analysis stages: window iteration, the write phase (:class:`MapSpec`,
:func:`write_map`), standardization, estimator look-up and the fitted-model folder format.

Model folders hold ``model.json`` (what the model is, its inputs, and the SHA-256 of every other file),
``arrays.npz`` (numbers: standardization, components, centres; loaded with ``allow_pickle=False``) and, only
for estimators that cannot be reduced to arrays (UMAP, random forests, ...), ``estimator.pkl``.

Security: PCA, TruncatedSVD, FastICA and every clustering are stored as arrays only, and loading them never
runs code from the folder. A folder holding ``estimator.pkl`` is refused unless the caller passes
``trust=True`` (CLI ``--trust-model``): unpickling runs code, and the SHA-256 recorded in ``model.json`` only
detects a changed or corrupted pickle, not a forged folder. Estimator classes are looked up only in an
allow-list of modules (:data:`ALLOWED_MODULES`), so ``--method`` cannot call arbitrary Python.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import pickle
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write, atomic_write_json, file_sha256, json_default
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor, worker_cache
from rasterlearn.errors import ConfigError, InputError, InputNotFoundError, ModelError, RasterlearnError
from rasterlearn.features._stage import job_fingerprint
from rasterlearn.grid import Grid, Window
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.io.writer import BlockWriter
from rasterlearn.options import StageOptions

__all__ = [
    "MODEL_FORMAT",
    "MapSpec",
    "Standardizer",
    "apply_by_window",
    "block_windows",
    "estimator_errors",
    "load_model_folder",
    "model_dir_for",
    "parse_kwargs",
    "resolve_estimator",
    "save_model_folder",
    "write_map",
]

log = logging.getLogger(__name__)

MODEL_FORMAT = "rasterlearn-features-model/1"
ALLOWED_MODULES = ("sklearn", "umap", "hdbscan")
"""Top-level packages whose estimator classes ``--method`` may name."""


def parse_kwargs(kwargs: str | dict[str, Any] | None, what: str = "estimator") -> dict[str, Any]:
    """Keyword arguments from a dict or a JSON object string (CLI ``--params '{"n_neighbors": 15}'``)."""
    if kwargs is None or kwargs == "":
        return {}
    if isinstance(kwargs, dict):
        return dict(kwargs)
    try:
        value = json.loads(kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} parameters must be a JSON object, e.g. '{{\"n_neighbors\": 15}}'; got {kwargs!r} ({exc})"
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} parameters must be a JSON object, got {kwargs!r}")
    return value


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_estimator(name: str, modules: list[str], aliases: dict[str, str]) -> type:
    """A scikit-learn (or umap) estimator class by alias, class name or snake_case name.

    Raises:
        ConfigError: unknown name (the message lists the aliases and where else it looked).
    """
    target = aliases.get(name.lower(), name)
    if "." in target:
        mod_name, cls_name = target.rsplit(".", 1)
        if mod_name.split(".")[0] not in ALLOWED_MODULES:
            raise ConfigError(
                f"method {name!r}: only estimator classes from {', '.join(ALLOWED_MODULES)} may be named; "
                f"use one of {', '.join(sorted(aliases))} or e.g. sklearn.decomposition.NMF"
            )
        try:
            obj = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Cannot import {target} for method {name!r}: {exc}") from exc
        if not (isinstance(obj, type) and callable(getattr(obj, "fit", None))):
            raise ConfigError(f"method {name!r}: {target} is not an estimator class (it has no fit method)")
        return obj
    key = _norm_name(target)
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        for attr in getattr(mod, "__all__", dir(mod)):
            obj = getattr(mod, attr, None)
            if isinstance(obj, type) and _norm_name(attr) == key and callable(getattr(obj, "fit", None)):
                return obj
    raise ConfigError(
        f"Unknown method {name!r}. Use one of {', '.join(sorted(aliases))} or a class name from "
        f"{', '.join(modules)}"
    )


@contextlib.contextmanager
def estimator_errors(cls: type, kwargs: dict[str, Any], n_samples: int) -> Iterator[None]:
    """Turn an estimator's own error (bad parameter, unsuitable data) into one :class:`ConfigError` line."""
    try:
        yield
    except (ValueError, TypeError, ArithmeticError) as exc:
        if isinstance(exc, RasterlearnError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "negative" in first.lower():
            hint = " (standardized bands have negative values: try --no-standardize on non-negative data)"
        raise ConfigError(
            f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed on {n_samples} "
            f"samples: {first}{hint}; change --method or --params"
        ) from exc


@dataclass(frozen=True)
class Standardizer:
    """Per-feature ``(x - mean) / scale`` (identity when disabled)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, enabled: bool = True) -> Standardizer:
        d = X.shape[1]
        if not enabled:
            return cls(np.zeros(d, "float64"), np.ones(d, "float64"))
        std = X.std(axis=0, dtype="float64")
        return cls(X.mean(axis=0, dtype="float64"), np.where(std > 1e-12, std, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale).astype("float32")


def window_size_for(bands: int, cap: int = 512, budget_mb: float = 64.0) -> int:
    """Side of square read windows holding at most ``budget_mb`` of float32 data over ``bands`` bands
    (a multiple of 16, at least 16, at most ``cap``): 512 for a few bands, 144 for 768 features."""
    side = int((budget_mb * 2**20 / (4 * max(1, bands))) ** 0.5) // 16 * 16
    return max(16, min(cap, side))


def block_windows(grid: Grid, blocksize: int) -> list[Window]:
    """Non-overlapping windows of ``blocksize`` covering the grid, row by row."""
    return [
        Window(r, c, min(blocksize, grid.height - r), min(blocksize, grid.width - c))
        for r in range(0, grid.height, blocksize)
        for c in range(0, grid.width, blocksize)
    ]


def apply_by_window(
    reader: RasterReader,
    writer: BlockWriter,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    nodata: float,
    out_dtype: str,
    blocksize: int,
    progress: Callable[[int], None] | None = None,
    on_block: Callable[[np.ndarray, np.ndarray], None] | None = None,
    executor: BlockExecutor | None = None,
) -> None:
    """Read the raster block by block, apply ``fn`` to the valid pixels ``(n, bands)`` -> ``(n, k)`` and write.

    Invalid pixels get ``nodata``. Blocks already committed by an interrupted run with the same fingerprint
    are skipped (``on_block`` is then not called for them). Windows shrink below ``blocksize`` for rasters
    with many bands so one window stays within ~64 MB (:func:`window_size_for`). ``executor`` computes the
    blocks elsewhere (a dask cluster: ``fn`` is sent to each worker once, workers read their own windows);
    the writer, the journal and ``on_block`` stay in this process, so the output is the same.
    """
    executor = executor or LocalExecutor()
    local = isinstance(executor, LocalExecutor)
    if not local:
        executor.check_readable(reader.path)
    spec = _BlockSpec(
        reader.path,
        tuple(reader.band_indexes),
        fn,
        nodata,
        out_dtype,
        writer.count,
        reader if local else None,
    )
    windows = block_windows(reader.grid, window_size_for(reader.count, blocksize))
    todo = []
    for win in windows:
        if writer.is_done(f"{win.row_off}:{win.col_off}"):
            if progress is not None:
                progress(1)
        else:
            todo.append(win)
    with gdal_cache(64):
        for win, (out, valid) in executor.map(_apply_block, todo, spec):
            if on_block is not None:
                on_block(out, valid)
            writer.write(out, win)
            writer.mark_done(f"{win.row_off}:{win.col_off}")
            if progress is not None:
                progress(1)


@dataclass(frozen=True)
class MapSpec:
    """The raster a feature stage writes on its input's grid: path, data type, nodata, provenance tags, one
    description per band and, for class maps, the colour table and category names (``style``)."""

    path: Path
    dtype: str
    nodata: float
    tags: dict[str, Any]
    band_descriptions: list[str]
    style: dict[str, Any] = field(default_factory=dict)


def write_map(
    reader: RasterReader,
    spec: MapSpec,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    job: StageOptions,
    resolved: Mapping[str, Any],
    inputs: Mapping[str, str | Path | None],
    blocksize: int,
    resume: bool,
    discard_on_error: Sequence[Path],
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
    on_block: Callable[[np.ndarray, np.ndarray], None] | None = None,
    on_open: Callable[[], object] | None = None,
) -> bool:
    """The write phase of a feature stage: a resumable :class:`BlockWriter` for ``spec`` on the reader's grid,
    filled by :func:`apply_by_window` with ``fn``.

    The writer's fingerprint (:func:`~rasterlearn.features._stage.job_fingerprint`) is the stage's options
    ``job`` less its output-neutral fields, the ``resolved`` values (the fitted model's digest...) with the
    band indexes read, the block and window sizes, and the identities of the raster and the other ``inputs``.

    ``on_open`` runs once the writer holds the output (e.g. saving a freshly fitted model, which the writer
    removes again when the run fails: ``discard_on_error``). Returns whether the writer resumed blocks of an
    interrupted run (``on_block`` has then not seen them).
    """
    with BlockWriter(
        spec.path,
        reader.grid,
        len(spec.band_descriptions),
        spec.dtype,
        nodata=spec.nodata,
        tags=spec.tags,
        band_descriptions=spec.band_descriptions,
        blocksize=blocksize,
        resume=resume,
        fingerprint=job_fingerprint(
            job,
            {
                **resolved,
                "bands": list(reader.band_indexes),
                "blocksize": blocksize,
                "window": window_size_for(reader.count, blocksize),
            },
            {"raster": reader.path, **inputs},
        ),
        discard_on_error=discard_on_error,
        **spec.style,
    ) as writer:
        if on_open is not None:
            on_open()
        resumed = bool(writer.done)
        apply_by_window(
            reader,
            writer,
            fn,
            nodata=spec.nodata,
            out_dtype=spec.dtype,
            blocksize=blocksize,
            progress=progress,
            executor=executor,
            on_block=on_block,
        )
    return resumed


@dataclass(frozen=True)
class _BlockSpec:
    """What a worker needs to compute a block of :func:`apply_by_window` (sent once per worker)."""

    path: str
    bands: tuple[int, ...]
    fn: Callable[[np.ndarray], np.ndarray]
    nodata: float
    out_dtype: str
    count: int
    reader: RasterReader | None = None  # the local executor reuses the caller's handle


def _apply_block(spec: _BlockSpec, win: Window) -> tuple[np.ndarray, np.ndarray]:
    reader = spec.reader or worker_cache(
        ("reader", spec.path, spec.bands), lambda: RasterReader(spec.path, spec.bands)
    )
    with gdal_cache(64):
        block = reader.read(win)
    out = np.full((spec.count, win.height, win.width), spec.nodata, dtype=spec.out_dtype)
    if block.valid.any():
        X = block.data[:, block.valid].T.astype("float32", copy=False)
        out[:, block.valid] = spec.fn(X).T.astype(spec.out_dtype, copy=False)
    return out, block.valid


def save_model_folder(
    folder: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], estimator: Any | None = None
) -> Path:
    """Write ``model.json`` + ``arrays.npz`` (+ ``estimator.pkl`` when given), file by file atomically."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _save_model_files(folder, meta, arrays, estimator)
    except BaseException:
        if created:  # a half-written folder (disk full, interrupted) must not look like a model
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _save_model_files(
    folder: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], estimator: Any | None
) -> Path:
    files: dict[str, str] = {}
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}  # numpy's stub types **kwds oddly
    # savez appends ".npz" to a name without it, so the temporary name keeps that suffix
    atomic_write(folder / "arrays.npz", lambda tmp: np.savez(tmp, **payload), suffix=".npz")
    files["arrays.npz"] = file_sha256(folder / "arrays.npz")
    pkl = folder / "estimator.pkl"
    if estimator is not None:

        def dump(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                pickle.dump(estimator, fh, protocol=pickle.HIGHEST_PROTOCOL)

        atomic_write(pkl, dump)
        files["estimator.pkl"] = file_sha256(pkl)
    elif pkl.exists():
        pkl.unlink()
    doc = {"format": MODEL_FORMAT, **meta, "files": files}
    atomic_write_json(folder / "model.json", doc, default=json_default)
    return folder


def load_model_folder(
    folder: str | Path, kind: str, *, trust: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray], Any | None]:
    """Read a model folder written by :func:`save_model_folder`, verifying format, kind and file hashes.

    A folder with a pickled estimator is refused unless ``trust`` (unpickling runs code from the file).
    """
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise InputNotFoundError(
            f"No fitted model at {folder}: expected model.json (written by rasterlearn {kind})"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{meta_path} is not a rasterlearn feature model (format {meta.get('format')!r})")
    if meta.get("kind") != kind:
        raise ModelError(f"{folder} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    files = meta.get("files", {})
    if ("estimator.pkl" in files or (folder / "estimator.pkl").exists()) and not trust:
        raise ModelError(
            f"{folder} holds a pickled estimator (estimator.pkl, written for {meta.get('method')!r}); loading "
            f"it runs code from the file. If you created this folder yourself, pass --trust-model "
            f"(trust_model=True); otherwise refit the model"
        )
    for name, digest in files.items():
        p = folder / name
        if not p.exists() or file_sha256(p) != digest:
            raise ModelError(
                f"{p} is missing or was changed after rasterlearn wrote it (SHA-256 mismatch); "
                f"refit the model"
            )
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    estimator = None
    if "estimator.pkl" in files:
        with open(folder / "estimator.pkl", "rb") as fh:
            estimator = pickle.load(fh)
    return meta, arrays, estimator


def check_model_bands(
    what: str, model: str | Path, band_names: list[str], raster: str | Path, count: int
) -> None:
    """Raise :class:`InputError` when a fitted ``what`` expects another number of bands than ``raster`` gives."""
    if len(band_names) != count:
        shown = ", ".join(band_names[:5]) + ("..." if len(band_names) > 5 else "")
        raise InputError(
            f"the {what} in {model} expects {len(band_names)} bands ({shown}), {raster} has {count}; select "
            f"the same bands it was fitted on (--bands)"
        )


def default_model_dir(output: Path) -> Path:
    """``OUT.model/`` beside ``OUT.tif``."""
    return output.with_name(f"{output.stem}.model")


def model_dir_for(output: Path, model: str | Path | None, model_out: str | Path | None) -> Path | None:
    """Where a stage saves the model it fits (``model_out``, default ``OUT.model/``); ``None`` when it
    applies an existing ``model`` instead."""
    return None if model is not None else Path(model_out or default_model_dir(output))


def iter_chunks(X: np.ndarray, size: int = 65536) -> Iterator[np.ndarray]:
    for i in range(0, len(X), size):
        yield X[i : i + size]
