"""Chips options: names, defaults and their checks; the dataset format and split names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.labels import ClassSchema

FORMAT = "rasterlearn-chips/1"
SPLITS = ("trn", "val", "tst")
SplitMethod = Literal["auto", "blocks", "random", "stratified", "scene"]
Compression = Literal["deflate", "lzw", "zstd", "none"]
DROP_REASONS = ("empty", "nodata", "unlabelled", "annotated", "class_proportion", "straddle")
Progress = Callable[[int], None]


def parse_class_proportion(value: str | Mapping[Any, Any] | None) -> dict[int, float]:
    """``"1:5,2:10"`` or ``{1: 5, 2: 10}`` (class code -> minimum percent) to a dict."""
    if value is None or value == "" or value == {}:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if ":" not in part:
                raise ConfigError(f"class proportion {part!r} must be 'code:percent', e.g. '1:5,2:10'")
            k, v = part.split(":", 1)
            items.append((k, v))
    out: dict[int, float] = {}
    for k, v in items:
        try:
            code, pct = int(str(k).strip()), float(str(v).strip())
        except ValueError as exc:
            raise ConfigError(f"class proportion {k}:{v} must be an integer code and a percent") from exc
        if not 0 <= pct <= 100:
            raise ConfigError(f"class proportion for class {code} must be a percent in 0..100, got {pct}")
        out[code] = pct
    return out


_DEFAULTS: dict[str, Any] = {
    "size": 256,
    "stride": None,
    "bands": None,
    "attribute": None,
    "burn_value": 1,
    "layer": None,
    "schema": None,
    "ignore_index": None,
    "all_touched": False,
    "overlap": "last",
    "priority": None,
    "label_areas": None,
    "unknown": "error",
    "label_band": 1,
    "split_method": "auto",
    "val": 0.15,
    "test": 0.15,
    "block_size": None,
    "min_annotated": 0.0,
    "max_nodata": 100.0,
    "class_proportion": None,
    "seed": 0,
    "compress": "deflate",
    "stats_sample": 200_000,
    "stats_windows": 256,
    "overwrite": False,
    "cache_mb": 64,
}


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ConfigError(f"Unknown chips options {sorted(unknown)}; valid: {', '.join(sorted(_DEFAULTS))}")
    o = {**_DEFAULTS, **{k: v for k, v in options.items() if v is not None or k in ("stride",)}}
    o["size"] = int(o["size"])
    o["stride"] = int(o["stride"]) if o["stride"] is not None else o["size"]
    if o["size"] <= 0 or o["stride"] <= 0:
        raise ConfigError(
            f"chip size and stride must be positive, got size={o['size']}, stride={o['stride']}"
        )
    if o["stride"] > o["size"]:
        raise ConfigError(
            f"stride ({o['stride']}) is larger than the chip size ({o['size']}): pixels between chips "
            f"would never be used; use a stride <= {o['size']}"
        )
    if o["bands"] is not None:
        o["bands"] = [
            int(b) if isinstance(b, int) or str(b).strip().isdigit() else str(b) for b in o["bands"]
        ]
    if isinstance(o["schema"], str | Path):
        o["schema"] = ClassSchema.load(o["schema"])
    elif isinstance(o["schema"], Mapping):
        o["schema"] = ClassSchema.from_dict(o["schema"])
    choices = {
        "overlap": ("last", "priority"),
        "unknown": ("error", "ignore"),
        "split_method": ("auto", "blocks", "random", "stratified", "scene"),
        "compress": ("deflate", "lzw", "zstd", "none"),
    }
    for key, allowed in choices.items():
        if o[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {o[key]!r}")
    la = o["label_areas"]
    if la is not None and la not in ("features", "extent"):
        if not Path(str(la)).exists():
            raise InputNotFoundError(
                f"label_areas {la!r} is neither 'features', 'extent' nor an existing polygon file"
            )
        o["label_areas"] = str(Path(str(la)).resolve())
    for key in ("val", "test"):
        o[key] = float(o[key])
        if not 0.0 <= o[key] < 1.0:
            raise ConfigError(f"{key} fraction must be in [0, 1), got {o[key]}")
    if o["val"] + o["test"] >= 1.0:
        raise ConfigError(
            f"val ({o['val']}) + test ({o['test']}) leave no training chips; keep their sum below 1"
        )
    for key in ("min_annotated", "max_nodata"):
        o[key] = float(o[key])
        if not 0.0 <= o[key] <= 100.0:
            raise ConfigError(f"{key} is a percent in 0..100, got {o[key]}")
    o["class_proportion"] = parse_class_proportion(o["class_proportion"])
    if o["priority"] is not None:
        o["priority"] = [int(p) for p in o["priority"]]
    if o["block_size"] is not None:
        o["block_size"] = int(o["block_size"])
    o["seed"] = int(o["seed"])
    return o
