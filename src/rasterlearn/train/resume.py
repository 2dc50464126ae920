"""Exact resume: what travels in a checkpoint (RNG states, history, config fingerprint) and whether a run
resumes, restarts or refuses."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rasterlearn.engine.journal import Decision, decide
from rasterlearn.errors import ConfigError, InputNotFoundError, ModelError, OutputError
from rasterlearn.train.config import CHECKPOINT_DIR, TrainConfig

if TYPE_CHECKING:
    from rasterlearn.train.module import SegmentationModule

# one logger for the whole package, as before the split
log = logging.getLogger("rasterlearn.train")


def save_resume_state(module: SegmentationModule, checkpoint: dict[str, Any]) -> None:
    """Put the config, its fingerprint, the history and the RNG states into a checkpoint being saved."""
    np_state = np.random.get_state(legacy=True)
    if not isinstance(np_state, tuple):  # the legacy global generator is always MT19937
        raise ModelError(f"Unexpected numpy RNG state {type(np_state).__name__}; cannot checkpoint it")
    checkpoint["rasterlearn"] = {
        "config": module.config.model_dump(mode="json"),
        "fingerprint": module.config.fingerprint(),
        "history": [dict(h) for h in module.history],
        "rng_torch": torch.get_rng_state(),
        "rng_numpy": torch.from_numpy(np.asarray(np_state[1], dtype="int64")),
        "rng_numpy_pos": int(np_state[2]),
        "rng_python": repr(random.getstate()),
    }


def load_resume_state(module: SegmentationModule, checkpoint: dict[str, Any]) -> None:
    """Restore the history and the RNG states of a checkpoint being loaded."""
    extra = checkpoint.get("rasterlearn") or {}
    module.history = [dict(h) for h in extra.get("history", [])]
    if "rng_torch" in extra:
        torch.set_rng_state(extra["rng_torch"])
        np.random.set_state(
            ("MT19937", extra["rng_numpy"].numpy().astype("uint32"), extra["rng_numpy_pos"], 0, 0.0)
        )
        import ast

        state = ast.literal_eval(extra["rng_python"])
        random.setstate(state)


def resume_checkpoint(
    out_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool
) -> tuple[Path, Path | None]:
    """``(last.ckpt, the checkpoint to resume from or None)``: checks a resumed run's options, refuses to
    mix two runs in ``out_dir``, and clears old checkpoints when ``overwrite``.

    The decision is the journal's (:func:`rasterlearn.engine.journal.decide`, logged at ``-v``): resume
    (same fingerprint; ``epochs`` raised continues a finished run), skip (``epochs`` lowered: the longer
    training stands, nothing more is trained) or restart (``--overwrite``; other options with ``--resume``
    are refused, naming them).
    """
    ckpt_dir = out_dir / CHECKPOINT_DIR
    last = ckpt_dir / "last.ckpt"
    if resume:
        if not last.exists():
            raise InputNotFoundError(f"Nothing to resume: {last} does not exist (run without --resume first)")
        _check_resumable(last, config)
        log.info("Resuming from %s", last)
        return last, last
    if ckpt_dir.exists() and any(ckpt_dir.glob("*.ckpt")) and not overwrite:
        raise OutputError(
            f"{out_dir} already holds checkpoints of a training run; use --resume to continue it or "
            f"--overwrite to start again"
        )
    if overwrite and ckpt_dir.exists():
        found = False
        for f in ckpt_dir.glob("*.ckpt"):
            f.unlink()
            found = True
        if found:
            decide(str(last), config.fingerprint(), "", resume=False)
            return last, None
    decide(str(last), config.fingerprint(), None)
    return last, None


def _check_resumable(last: Path, config: TrainConfig) -> Decision:
    """The journal's decision for resuming from ``last``; options that differ are a :class:`ConfigError`
    naming them. A checkpoint without a fingerprint (written by Lightning alone) is taken as this run's."""
    ckpt = torch.load(str(last), map_location="cpu", weights_only=True)
    extra = ckpt.get("rasterlearn") or {}
    old = extra.get("config", {})
    current = config.fingerprint()
    field = TrainConfig.extendable
    decision = decide(
        str(last),
        current,
        extra.get("fingerprint") or current,
        extend=(field, old.get(field), getattr(config, field)),
        shrink="skip",
    )
    if decision.action == "restart":
        new = config.model_dump(mode="json")
        diff = sorted(
            k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in TrainConfig.resume_neutral
        )
        raise ConfigError(
            f"Cannot resume from {last}: options differ from that run ({', '.join(diff)}). Use the same "
            f"options, or --overwrite to start again."
        )
    return decision
