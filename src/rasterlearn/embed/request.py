"""The arguments of one :func:`rasterlearn.embed.embed` call, checked, as one value the job's phases share.

Also the one map between :class:`rasterlearn.options.EmbedOptions` (the stage's options: CLI, ``--config``
YAML, :func:`rasterlearn.embed.run_embed`) and ``embed``'s keywords: :func:`kernel_name` (an option's keyword)
and :meth:`EmbedRequest.options` (the options a call amounts to, what its session is hashed from).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from rasterlearn.embed.backbones import Backbone
from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.errors import ConfigError, OutputError
from rasterlearn.grid import Bounds, Window
from rasterlearn.io.paths import check_outputs
from rasterlearn.options import EmbedOptions, describe_validation_error

MergeMode = Literal["average", "first", "center"]
NormMode = Literal["image", "model", "none"]
Storage = Literal["float32", "float16", "uint16"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"] | str

RENAMED = {
    "min_valid": "min_valid_fraction",
    "aoi": "extent",
    "aoi_crs": "extent_crs",
    "io_threads": "workers",
    "pause": "pause_s",
}
"""EmbedOptions fields whose :func:`~rasterlearn.embed.embed` keyword has another name."""
NEGATED = {"no_pretrained": "pretrained", "no_resume": "resume"}
"""EmbedOptions flags whose keyword is their negation."""
STAGE_ONLY = frozenset({"stac", "assets", "scheduler", "workers"})
"""EmbedOptions fields :func:`~rasterlearn.embed.run_embed` resolves before ``embed``: the STAC item into the
raster read and its ``provenance``, the dask options into the ``executor``."""


def kernel_name(field: str) -> str:
    """The :func:`~rasterlearn.embed.embed` keyword of EmbedOptions ``field`` (not for :data:`STAGE_ONLY`)."""
    return NEGATED.get(field) or RENAMED.get(field, field)


@dataclass(frozen=True)
class EmbedRequest:
    """:func:`rasterlearn.embed.embed`'s parameters under their own names (documented there), checked:
    ``raster`` is a :class:`~pathlib.Path` and ``stride`` defaults to ``size``."""

    raster: Path
    model: str
    output: str | Path | None
    checkpoint: str | Path | None
    pretrained: bool
    seed: int
    model_kwargs: dict[str, Any] | None
    bands: Sequence[int | str] | None
    size: int
    stride: int
    input_size: int | None
    layer: int | None
    normalization: NormMode
    value_scale: float | None
    merge: MergeMode
    storage: Storage
    min_valid_fraction: float
    extent: Window | Bounds | str | Path | None
    extent_crs: str | None
    target_crs: str | None
    resolution: float | None
    resampling: str
    device: DeviceName
    batch_size: int
    workers: int
    pause_s: float
    memory_mb: float
    cache_mb: int
    cache_dir: str | Path | None
    resume: bool
    overwrite: bool
    backbone: Backbone | None
    progress: Callable[[int], None] | None
    executor: BlockExecutor | None
    provenance: Mapping[str, Any] | None

    @classmethod
    def from_call(cls, arguments: Mapping[str, Any]) -> EmbedRequest:
        """The request for ``embed``'s arguments (every parameter, by name), with the choices checked.

        Raises:
            ConfigError: an unknown merge, normalization or storage, a valid fraction outside 0..1 or a
                batch size below 1.
            OutputError: ``output`` is an input, or its folder does not exist.
        """
        stride = arguments["size"] if arguments["stride"] is None else arguments["stride"]
        req = cls(**{**arguments, "raster": Path(arguments["raster"]), "stride": stride})
        if req.merge not in ("average", "first", "center"):
            raise ConfigError(f"merge must be average, first or center; got {req.merge!r}")
        if req.normalization not in ("image", "model", "none"):
            raise ConfigError(f"normalization must be image, model or none; got {req.normalization!r}")
        if req.storage not in ("float32", "float16", "uint16"):
            raise ConfigError(f"storage must be float32, float16 or uint16; got {req.storage!r}")
        if not 0.0 <= req.min_valid_fraction <= 1.0:
            raise ConfigError(f"min_valid_fraction must be within 0..1, got {req.min_valid_fraction}")
        if req.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {req.batch_size}")
        out_path = req.out_path
        check_outputs([req.raster, req.checkpoint, req.extent], [out_path])
        if out_path is not None and not out_path.parent.exists():
            raise OutputError(f"Output folder {out_path.parent} does not exist; create it first")
        return req

    def options(self) -> EmbedOptions:
        """The stage options this call amounts to (its session is hashed from them, less the output-neutral
        ones, with the inputs' resolved values: :func:`rasterlearn.embed.session._session_parameters`).

        Every field but :data:`STAGE_ONLY` is read from its keyword (:func:`kernel_name`); bands and
        ``model_kwargs`` as given (lists and mappings, which the options hold as text). The options of
        :func:`~rasterlearn.embed.run_embed` come back the same (tested). ``aoi`` stays ``None``: an extent
        may be a :class:`~rasterlearn.grid.Window`, which has no text form; the session records it resolved.
        """
        values: dict[str, Any] = {}
        for name in EmbedOptions.model_fields:
            if name in STAGE_ONLY or name == "aoi":
                continue
            value = getattr(self, kernel_name(name))
            values[name] = (not value) if name in NEGATED else value
        values["raster"] = str(self.raster)
        values["bands"] = None if self.bands is None else list(self.bands)
        values["model_kwargs"] = self.model_kwargs or None
        try:
            return EmbedOptions.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"embed: {describe_validation_error(exc, EmbedOptions)}") from exc

    @property
    def out_path(self) -> Path | None:
        """The final output the caller named (``None``: ``features.tif`` in the session folder)."""
        return None if self.output is None else Path(self.output)

    @property
    def cache(self) -> Path:
        """Where sessions live: ``cache_dir``, else ``embed_sessions`` beside the output or here."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return (self.out_path.parent if self.out_path is not None else Path.cwd()) / "embed_sessions"

    @property
    def reprojected(self) -> bool:
        """Whether the raster is read reprojected (a target CRS or resolution)."""
        return bool(self.target_crs or self.resolution)
