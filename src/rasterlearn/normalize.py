"""Band normalization: a small value type shared by training, prediction and embedding.

The same :class:`Normalization` is stored in ``dataset.json`` (from the training split's statistics), in
every model package and in feature-raster metadata, so a model always sees exactly the normalization it
was trained with. Data are never divided by 255 unless the statistics say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import InputError

__all__ = ["Normalization", "NormalizationMethod"]

NormalizationMethod = Literal["zscore", "percentile", "minmax", "none"]
_METHODS = ("zscore", "percentile", "minmax", "none")


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-band affine normalization ``(x - offset) / scale``.

    Attributes:
        method: ``zscore`` (mean/std), ``percentile`` (2nd..98th percentile to 0..1), ``minmax`` or ``none``.
        offset: per-band value subtracted.
        scale: per-band divisor (> 0).
        fill: value given to invalid (nodata) pixels *after* normalization (0 = the band mean for zscore).
    """

    method: NormalizationMethod
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise InputError(
                f"normalization method must be one of {', '.join(_METHODS)}; got {self.method!r}"
            )
        if len(self.offset) != len(self.scale):
            raise InputError(f"normalization has {len(self.offset)} offsets but {len(self.scale)} scales")
        object.__setattr__(self, "offset", tuple(float(v) for v in self.offset))
        object.__setattr__(self, "scale", tuple(float(v) if float(v) > 1e-12 else 1.0 for v in self.scale))

    @property
    def bands(self) -> int:
        return len(self.offset)

    @classmethod
    def identity(cls, bands: int) -> Normalization:
        return cls("none", (0.0,) * bands, (1.0,) * bands)

    @classmethod
    def from_stats(
        cls,
        stats: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[float]],
        method: NormalizationMethod = "zscore",
    ) -> Normalization:
        """Build from per-band statistics: a list of ``{mean, std, min, max, p2, p98}`` dicts (as written by
        :func:`rasterlearn.io.raster.band_statistics`) or a dict of lists with those keys."""
        if isinstance(stats, Mapping):
            n = len(next(iter(stats.values())))
            rows = [{k: v[i] for k, v in stats.items()} for i in range(n)]
        else:
            rows = [dict(s) if isinstance(s, Mapping) else s.to_dict() for s in stats]
        if method == "none":
            return cls.identity(len(rows))
        keys = {"zscore": ("mean", "std"), "percentile": ("p2", "p98"), "minmax": ("min", "max")}[method]
        missing = [k for k in keys if any(k not in r for r in rows)]
        if missing:
            raise InputError(f"statistics lack {missing} needed for {method} normalization")
        if method == "zscore":
            return cls(method, tuple(r["mean"] for r in rows), tuple(r["std"] for r in rows))
        lo, hi = keys
        return cls(method, tuple(r[lo] for r in rows), tuple(r[hi] - r[lo] for r in rows))

    def apply(self, data: np.ndarray, valid: np.ndarray | None = None, dtype: str = "float32") -> np.ndarray:
        """Normalize ``data`` (bands, ...) to ``dtype``; pixels where ``valid`` is False get :attr:`fill`."""
        if data.shape[0] != self.bands:
            raise InputError(f"data has {data.shape[0]} bands but the normalization expects {self.bands}")
        shape = (self.bands,) + (1,) * (data.ndim - 1)
        off = np.asarray(self.offset, dtype=dtype).reshape(shape)
        inv = (1.0 / np.asarray(self.scale, dtype="float64")).astype(dtype).reshape(shape)
        out = (data.astype(dtype, copy=False) - off) * inv
        if valid is not None:
            out = np.where(
                valid[np.newaxis] if valid.ndim == data.ndim - 1 else valid, out, np.asarray(self.fill, dtype)
            )
        elif np.issubdtype(out.dtype, np.floating):
            out = np.nan_to_num(out, nan=self.fill, posinf=self.fill, neginf=self.fill)
        return out.astype(dtype, copy=False)

    def invert(self, data: np.ndarray) -> np.ndarray:
        shape = (self.bands,) + (1,) * (data.ndim - 1)
        return data * np.asarray(self.scale).reshape(shape) + np.asarray(self.offset).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "offset": list(self.offset),
            "scale": list(self.scale),
            "fill": self.fill,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        unknown = set(data) - {"method", "offset", "scale", "fill"}
        if unknown:
            raise InputError(f"unknown normalization keys {sorted(unknown)}")
        return cls(data["method"], tuple(data["offset"]), tuple(data["scale"]), float(data.get("fill", 0.0)))
