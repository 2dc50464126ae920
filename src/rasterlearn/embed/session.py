"""Sessions of :func:`rasterlearn.embed.embed`: the parameters that change the result, their hash, and the index.

Every parameter that changes the result is canonicalized and hashed (:func:`session_hash`); the run lives in
``<cache_dir>/<hash>/`` with ``parameters.json``, the writer's partial/progress files and, once complete,
``result.json``; ``<cache_dir>/index.json`` lists the sessions (:func:`list_sessions`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from rasterlearn._util import atomic_write_json, file_identity, file_sha256
from rasterlearn.embed.request import EmbedRequest
from rasterlearn.grid import Window

SESSION_FORMAT = "rasterlearn-embed/1"


def _file_identity(path: str | Path, content_hash: bool = False) -> dict[str, Any]:
    """Path/size/mtime of an input, or (``content_hash``) its SHA-256 and size, e.g. for checkpoints."""
    if content_hash:
        return {"sha256": file_sha256(path), "size": Path(path).stat().st_size}
    return file_identity(path)


def _canonical(value: Any) -> Any:
    """``value`` with sorted keys, floats to 10 significant digits and paths as text (what is hashed)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, Path):
        return str(value)
    return value


def session_hash(parameters: dict[str, Any]) -> str:
    """A short stable hash of canonicalized parameters (sorted keys, normalized floats)."""
    text = json.dumps(_canonical(parameters), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed)."""
    atomic_write_json(path, data, default=str)


_INDEX_LOCK = threading.Lock()


def _update_index(cache_dir: Path, key: str, entry: dict[str, Any]) -> None:
    """Merge ``entry`` into session ``key`` of ``cache_dir/index.json``."""
    with _INDEX_LOCK:
        index_path = cache_dir / "index.json"
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            index = {"format": SESSION_FORMAT, "sessions": {}}
        index.setdefault("sessions", {}).setdefault(key, {}).update(entry)
        _write_json(index_path, index)


def list_sessions(cache_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The sessions recorded in ``cache_dir/index.json`` (hash -> status, input, model, output, times)."""
    p = Path(cache_dir) / "index.json"
    if not p.exists():
        return {}
    return dict(json.loads(p.read_text(encoding="utf-8")).get("sessions", {}))


def _session_parameters(
    req: EmbedRequest, band_indexes: list[int], digest: str, random_weights: bool
) -> dict[str, Any]:
    """The parameters that change the features: the session's identity (hashed, and ``parameters.json``)."""
    checkpoint, extent, provenance = req.checkpoint, req.extent, req.provenance
    return {
        "format": SESSION_FORMAT,
        "input": _file_identity(req.raster),
        "bands": band_indexes,
        "model": req.model,
        "checkpoint": None if checkpoint is None else _file_identity(checkpoint, content_hash=True),
        "pretrained": bool(req.pretrained and checkpoint is None),
        "model_kwargs": req.model_kwargs or {},
        "weights_sha256": digest,
        **({"seed": req.seed} if random_weights else {}),
        "layer": req.layer,
        "size": req.size,
        "stride": req.stride,
        "input_size": req.input_size,
        "normalization": req.normalization,
        "value_scale": req.value_scale,
        "merge": req.merge,
        "storage": req.storage,
        "min_valid_fraction": req.min_valid_fraction,
        "extent": (
            extent.to_tuple()
            if isinstance(extent, Window)
            else (
                _file_identity(extent)
                if isinstance(extent, str | Path)
                else (list(extent) if extent is not None else None)
            )
        ),
        "extent_crs": req.extent_crs,
        "target_crs": req.target_crs,
        "resolution": req.resolution,
        "resampling": req.resampling if req.reprojected else None,
        **({"source": dict(provenance)} if provenance else {}),
    }


def _completed_record(record_path: Path, sid: str, final: Path) -> dict[str, Any] | None:
    """The ``result.json`` of session ``sid`` when it is complete and ``final`` is the file it wrote, as it
    was written (same path and modification time); else ``None``."""
    if not (record_path.exists() and final.exists()):
        return None
    rec = json.loads(record_path.read_text(encoding="utf-8"))
    if (
        rec.get("session") == sid
        and rec.get("output") == str(final.resolve())
        and rec.get("output_mtime_ns") == final.stat().st_mtime_ns
    ):
        return dict(rec)
    return None
