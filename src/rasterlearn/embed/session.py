"""Sessions of :func:`rasterlearn.embed.embed`: the parameters that change the result, their hash, and the index.

A session is identified by the stage's options (:class:`rasterlearn.options.EmbedOptions`, as the call
amounts to: :meth:`rasterlearn.embed.request.EmbedRequest.options`) less the options it declares
output-neutral, with the values they resolved to where the text does not pin the result: the input's
identity, the band indexes, the checkpoint's content hash, the parsed model arguments, the extent, the STAC
item's provenance; plus the digest of the weights used (:func:`_session_parameters`). They are hashed by the
job journal's canonical fingerprint (:func:`session_hash`); the run lives in ``<cache_dir>/<hash>/`` with
``parameters.json``, the writer's partial/progress files and, once complete, ``result.json``;
``<cache_dir>/index.json`` lists the sessions (:func:`list_sessions`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from rasterlearn._util import atomic_write_json, file_sha256
from rasterlearn.embed.request import EmbedRequest
from rasterlearn.engine.journal import fingerprint, input_identity, without
from rasterlearn.grid import Window

SESSION_FORMAT = "rasterlearn-embed/2"
"""Format of the session parameters (2: the options model's fields, hashed by the journal's fingerprint)."""


def session_hash(parameters: dict[str, Any]) -> str:
    """A short stable hash of parameters: the journal's canonical fingerprint
    (:func:`rasterlearn.engine.journal.fingerprint` with ``normalize=True``: sorted keys, paths as text,
    ``2.0 == 2``), 16 hex digits."""
    return fingerprint(parameters, normalize=True)


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


def _extent_identity(extent: Any) -> Any:
    """What an extent resolves to in a session: a window as a tuple, a vector file by identity, bounds."""
    if isinstance(extent, Window):
        return extent.to_tuple()
    if isinstance(extent, str | Path):
        return input_identity(extent)
    return None if extent is None else list(extent)


def _session_parameters(req: EmbedRequest, band_indexes: list[int], digest: str) -> dict[str, Any]:
    """The session's identity (hashed, and ``parameters.json``): the options the call amounts to, less the
    output-neutral ones, each field under its own name, with these values resolved in place of the text:

    ``raster`` the input's identity (path, size, modification time), ``bands`` the band indexes,
    ``checkpoint`` the file's SHA-256 and size (not its path), ``model_kwargs`` the parsed mapping, ``aoi``
    the extent (a window, a vector file's identity or bounds), ``stac`` the item's provenance (id, assets,
    hrefs) and ``assets`` the assets stacked. Added: the ``format`` and the digest of the weights used
    (``weights_sha256``, which also pins the pretrained weights and the seed of random ones).
    """
    options = req.options()
    params = without(options.model_dump(mode="json"), options.neutral_fields())
    provenance = dict(req.provenance) if req.provenance else None
    checkpoint = req.checkpoint
    resolved = {
        "raster": input_identity(req.raster),
        "bands": band_indexes,
        "checkpoint": None
        if checkpoint is None
        else {"sha256": file_sha256(checkpoint), "size": Path(checkpoint).stat().st_size},
        "model_kwargs": req.model_kwargs or {},
        "aoi": _extent_identity(req.extent),
        "stac": provenance,
        "assets": None if provenance is None else provenance.get("stac_assets"),
    }
    unknown = set(resolved) - set(params)
    assert not unknown, f"resolved values of fields that are not fingerprinted: {sorted(unknown)}"
    return {"format": SESSION_FORMAT, **params, **resolved, "weights_sha256": digest}


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
