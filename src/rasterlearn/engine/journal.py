"""The job journal: one fingerprint and one skip / resume / restart rule for every resumable job.

Every job that can be interrupted and picked up again keeps a record beside its output: the block writer's
``.NAME.progress.json`` (fingerprint + committed block keys, :class:`rasterlearn.io.writer.BlockWriter`),
a pipeline stage's ``stage.json`` (:class:`rasterlearn.pipeline.cache.StageCache`) and a training run's
``checkpoints/last.ckpt`` (:mod:`rasterlearn.train.resume`); jobs that reduce blocks to one result (evaluate,
vectorize) keep their running state in the same ``.NAME.progress.json``
(:class:`rasterlearn.engine.reduction.ReductionRecord`). The files differ; what they answer is the same
question, and this module answers it once:

* :func:`fingerprint` — SHA-256 of the job's parameters as sorted-key JSON, without the parameters the
  stage declares *output-neutral* (``output_neutral`` on its options model, :mod:`rasterlearn.options`,
  :class:`rasterlearn.train.TrainConfig`), plus the identities of its input files
  (:func:`rasterlearn._util.file_identity`: path, size, modification time) and any arrays (fitted models).
* :func:`decide` — ``start`` (nothing recorded), ``skip`` (complete, same fingerprint), ``resume``
  (interrupted with the same fingerprint, or an extendable parameter such as ``epochs`` raised) or
  ``restart`` (other fingerprint, resuming not asked, an extendable parameter lowered), with the reason.
  Each decision is logged at DEBUG (``-v``) in one format: ``journal JOB: ACTION (REASON)``.

The encodings of existing fingerprints never change (they are recorded in outputs, progress records,
checkpoints and ``stage.json``, and a different digest would restart every interrupted job):
``fingerprint(...)`` is :func:`rasterlearn._util.stable_hash`'s encoding, and ``normalize=True`` the
pipeline's stage hashes (paths as text, ``2.0 == 2``, compact JSON).

This module is plain data (no I/O library), so the I/O layer's block writer may use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from rasterlearn._util import file_identity, is_virtual, stable_hash
from rasterlearn.errors import InputNotFoundError

log = logging.getLogger("rasterlearn.journal")

Action = Literal["start", "skip", "resume", "restart"]
Shrink = Literal["restart", "skip"]

__all__ = [
    "Action",
    "Decision",
    "canonical",
    "decide",
    "fingerprint",
    "input_identity",
    "log_decision",
    "without",
]


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data: models dumped, keys sorted and as text, paths as text, ``2.0`` as ``2``."""
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def input_identity(path: str | Path | None) -> dict[str, Any] | None:
    """:func:`rasterlearn._util.file_identity` of an input, ``None`` for none; a missing local file is an
    :class:`~rasterlearn.errors.InputNotFoundError` naming it."""
    if path is None:
        return None
    if not is_virtual(path) and not Path(path).exists():
        raise InputNotFoundError(f"Input not found: {Path(path)}")
    return file_identity(path)


def without(params: Mapping[str, Any], neutral: Iterable[str]) -> dict[str, Any]:
    """``params`` less the output-neutral keys (top level)."""
    drop = set(neutral)
    return {k: v for k, v in params.items() if k not in drop}


def fingerprint(
    params: Any,
    *arrays: np.ndarray | None,
    neutral: Iterable[str] = (),
    inputs: Mapping[str, str | Path | None] | None = None,
    length: int = 16,
    normalize: bool = False,
) -> str:
    """The fingerprint of a job: hex SHA-256 of its parameters, then the bytes of ``arrays``.

    Args:
        params: the job's parameters (JSON-able; other objects are hashed as their text).
        arrays: arrays that are part of the job (a fitted model's centres, projection, scaling).
        neutral: keys of ``params`` that cannot change the output (memory, threads, workers, device...),
            left out: the stage's ``output_neutral`` declaration (:mod:`rasterlearn.options`).
        inputs: input files by role, hashed by identity (path, size, mtime) under the key ``inputs``.
        length: hex digits kept.
        normalize: the pipeline's stage hash: :func:`canonical` data as compact JSON.
    """
    if isinstance(params, Mapping) and (neutral or inputs is not None):
        params = without(params, neutral)
        if inputs is not None:
            params["inputs"] = {k: input_identity(p) for k, p in inputs.items()}
    if not normalize:
        return stable_hash(params, *arrays, length=length)
    text = json.dumps(canonical(params), sort_keys=True, separators=(",", ":"), default=str)
    h = hashlib.sha256(text.encode("utf-8"))
    for arr in arrays:
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:length]


@dataclass(frozen=True)
class Decision:
    """What a job does with what an earlier run left: the action, why, and the cause as a short code.

    ``cause`` is one of ``new``, ``complete``, ``interrupted``, ``changed``, ``not-resuming``, ``raised``,
    ``lowered``, or a caller's own (``unreadable``, ``forced``, ``foreign``, ``shape``).
    """

    action: Action
    reason: str
    cause: str

    def __str__(self) -> str:
        return f"{self.action} ({self.reason})"


def log_decision(job: str, decision: Decision) -> Decision:
    """Log ``decision`` at DEBUG (``-v``) in the journal's one format, and return it."""
    log.debug("journal %s: %s", job, decision)
    return decision


def decide(
    job: str,
    current: str,
    recorded: str | None,
    *,
    complete: bool = False,
    resume: bool = True,
    done: int | None = None,
    extend: tuple[str, float | None, float] | None = None,
    shrink: Shrink = "restart",
    quiet: bool = False,
) -> Decision:
    """Skip, resume or restart ``job``, and why (logged at DEBUG by :func:`log_decision`).

    Args:
        job: what the log line names (an output path, ``stage train``, a checkpoint).
        current: this run's fingerprint.
        recorded: the fingerprint an earlier run recorded, ``None`` when there is no usable record.
        complete: the earlier run finished.
        resume: resuming is asked for (``False``: ``--no-resume`` / ``--overwrite``).
        done: blocks committed by the earlier run, for the reason.
        extend: ``(name, recorded value, current value)`` of a parameter left out of the fingerprint that a
            finished run can be extended by (training ``epochs``): raised resumes even a complete run.
        shrink: what a lowered ``extend`` value does: ``restart`` (the result must match the options:
            the pipeline) or ``skip`` (the longer result stands: ``train --resume``, as Lightning does).
        quiet: do not log (a caller asking again for the same job logs its final decision itself).

    Rules, in order: no record → ``start``; resuming not asked → ``restart``; other fingerprint →
    ``restart``; ``extend`` raised → ``resume``, lowered → ``shrink``; complete → ``skip``; else ``resume``.
    """
    name, before, now = extend if extend is not None else ("", None, 0.0)
    if recorded is None:
        d = Decision("start", "no record of an earlier run", "new")
    elif not resume:
        d = Decision("restart", "resuming not asked; the earlier run is discarded", "not-resuming")
    elif recorded != current:
        d = Decision(
            "restart", f"parameters changed (fingerprint {recorded[:16]} -> {current[:16]})", "changed"
        )
    elif before is not None and now != before:
        if now > before:
            d = Decision("resume", f"{name} raised from {before:g} to {now:g}, same fingerprint", "raised")
        elif shrink == "skip":
            d = Decision(
                "skip", f"{name} lowered from {before:g} to {now:g}; the longer run stands", "lowered"
            )
        else:
            d = Decision("restart", f"{name} lowered from {before:g} to {now:g}", "lowered")
    elif complete:
        d = Decision("skip", "complete with the same fingerprint", "complete")
    else:
        blocks = "" if done is None else f", {done} blocks committed"
        d = Decision("resume", f"interrupted run with the same fingerprint{blocks}", "interrupted")
    return d if quiet else log_decision(job, d)
