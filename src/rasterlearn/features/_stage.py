"""What the feature stages' ``run_*`` functions and kernels share: the options model of a call, its journal
fingerprint, the option texts parsed (``bands``) and the progress total.

The fingerprint of a feature map's resumable write (:func:`job_fingerprint`) is the stage's options model
(:mod:`rasterlearn.options`) less its ``output_neutral`` fields, plus the values resolved while running that the
options do not pin (band indexes resolved from names, the block and window sizes, the fitted model's digest)
and the identities of the input files. A kernel called with keywords (:func:`~rasterlearn.features.reduce.reduce_raster`
...) builds its options model from them (:func:`call_options`), so a run through ``run_reduce(options)``, the
command line, the run YAML or the keyword API with the same settings resumes the same partial map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from rasterlearn.engine import journal
from rasterlearn.options import StageOptions, parse_bands

__all__ = [
    "call_options",
    "count_blocks",
    "feature_blocks",
    "input_files",
    "job_fingerprint",
    "model_identity",
]

M = TypeVar("M", bound=StageOptions)


def count_blocks(raster: str | Path, bands: Sequence[int | str] | None = None, blocksize: int = 512) -> int:
    """Blocks a feature stage reads from ``raster`` (its progress total): windows of
    :func:`~rasterlearn.features._io.window_size_for` the selected bands, capped at ``blocksize``."""
    from rasterlearn.features import _io
    from rasterlearn.io.raster import RasterReader

    with RasterReader(raster, bands) as r:
        return len(_io.block_windows(r.grid, _io.window_size_for(r.count, blocksize)))


def feature_blocks(options: StageOptions) -> int:
    """The progress total of a feature stage's ``options`` (reduce, cluster, similarity, classify): the
    blocks its map is computed in (see :func:`count_blocks`)."""
    (raster,) = options.require("raster")
    return count_blocks(raster, parse_bands(getattr(options, "bands", None)))


def _is_path(value: Any) -> bool:
    return isinstance(value, str | Path)


def call_options(model: type[M], values: Mapping[str, Any]) -> tuple[M, dict[str, Any]]:
    """The options model of a keyword call, and the values it cannot hold.

    A value the model refuses (a GeoDataFrame where it takes a file, ``None`` where it takes a number) is
    left at the model's default and returned in the second mapping as its type name or its value, so the
    fingerprint still tells two such calls apart."""
    data = {k: str(v) if k == "raster" and isinstance(v, Path) else v for k, v in values.items()}
    rest: dict[str, Any] = {}
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data), rest
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & set(data):
                raise
            for key in bad & set(data):
                value = data.pop(key)
                rest[key] = (
                    value if value is None or isinstance(value, int | float | str) else type(value).__name__
                )
    raise AssertionError("unreachable")  # pragma: no cover


def input_files(**inputs: Any) -> dict[str, str | Path | None]:
    """Inputs identified by file (path, size, mtime) in the fingerprint: paths only (a GeoDataFrame is
    fingerprinted through what was fitted from it)."""
    return {k: v if _is_path(v) else None for k, v in inputs.items()}


def job_fingerprint(
    options: StageOptions,
    resolved: Mapping[str, Any],
    inputs: Mapping[str, str | Path | None],
) -> str:
    """The journal fingerprint of a feature map: ``options`` less its output-neutral fields, the ``resolved``
    values and the identities of the ``inputs`` (role -> file)."""
    params = journal.without(options.model_dump(mode="json"), options.neutral_fields())
    params["resolved"] = dict(resolved)
    return journal.fingerprint(params, inputs=dict(inputs))


def model_identity(model: str | Path | None) -> Path | None:
    """What identifies an applied model folder: its ``model.json`` (which holds the other files' SHA-256)."""
    return None if model is None else Path(model) / "model.json"
