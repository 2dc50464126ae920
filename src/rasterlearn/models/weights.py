"""Pretrained and local weights: reading state dicts (safetensors, or torch files with ``weights_only``),
copying matching tensors into a model, and adapting a pretrained first layer to any number of bands."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rasterlearn.errors import InputNotFoundError, ModelError
from rasterlearn.models.registry import CHANNEL_STRATEGIES, ChannelStrategy

log = logging.getLogger("rasterlearn.models")  # one logger for the package, as before the split

# the weights file of a model package folder (see :mod:`.package`)
WEIGHTS_FILE = "model.safetensors"

_RGB_NAMES = (
    ("red", "r", "b04", "b4", "sr_b4", "band_4_red"),
    ("green", "g", "b03", "b3", "sr_b3"),
    ("blue", "b", "b02", "b2", "sr_b2"),
)


def rgb_band_indexes(band_names: Sequence[str] | None, in_channels: int) -> tuple[int, int, int] | None:
    """0-based indexes of the red, green and blue bands, found by name (``red``/``R``/Sentinel-2 ``B04``...).

    Falls back to the first three bands (``None`` when there are fewer than three).
    """
    if band_names:
        low = [str(n).strip().lower() for n in band_names]
        found = []
        for aliases in _RGB_NAMES:
            hit = next((i for i, n in enumerate(low) if n in aliases), None)
            if hit is None:
                break
            found.append(hit)
        if len(found) == 3 and len(set(found)) == 3:
            return (found[0], found[1], found[2])
    return (0, 1, 2) if in_channels >= 3 else None


def adapt_first_layer(
    weight: torch.Tensor,
    in_channels: int,
    strategy: ChannelStrategy = "repeat",
    rgb: Sequence[int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Adapt a pretrained first-layer kernel ``(out, c_src, kh, kw)`` to ``in_channels`` input bands.

    Strategies (the pretrained kernel is never dropped silently; the returned dict says what was done):

    * ``repeat`` (default, the timm/smp convention): 1 band gets the sum of the source kernels; otherwise the
      RGB bands (``rgb``, default the first three) get the R, G, B kernels and every other band cycles
      through them; all are scaled by ``c_src / in_channels`` so activations keep their magnitude.
    * ``mean``: RGB bands keep their kernels, other bands get the mean kernel; scaled as ``repeat``.
    * ``zeros``: RGB bands keep their kernels unscaled, other bands start at zero, so the untrained model
      reproduces the pretrained RGB response and learns what the extra bands add.
    * ``random``: the layer is re-initialised (Kaiming); logged as a warning.
    """
    if strategy not in CHANNEL_STRATEGIES:
        raise ModelError(f"channel strategy must be one of {', '.join(CHANNEL_STRATEGIES)}; got {strategy!r}")
    w = weight.detach().float()
    out_ch, c_src = w.shape[:2]
    info: dict[str, Any] = {
        "strategy": strategy,
        "source_channels": int(c_src),
        "in_channels": int(in_channels),
    }
    new = torch.zeros((out_ch, in_channels, *w.shape[2:]), dtype=torch.float32)
    if strategy == "random":
        nn.init.kaiming_normal_(new, mode="fan_out", nonlinearity="relu")
        info["mapping"] = "re-initialised"
        return new.to(weight.dtype), info
    if in_channels == 1 and strategy != "zeros":
        new[:, 0] = w.sum(dim=1)
        info["mapping"] = ["sum of all source channels"]
        return new.to(weight.dtype), info
    rgb_idx = list(rgb) if rgb is not None and in_channels >= c_src else list(range(min(c_src, in_channels)))
    src_of: dict[int, int | str] = {}
    for s, band in enumerate(rgb_idx[:c_src]):
        src_of[band] = s
    others = [b for b in range(in_channels) if b not in src_of]
    for k, band in enumerate(others):
        src_of[band] = (k % c_src) if strategy == "repeat" else ("mean" if strategy == "mean" else "zero")
    for band, src in src_of.items():
        if isinstance(src, int):
            new[:, band] = w[:, src]
        elif src == "mean":
            new[:, band] = w.mean(dim=1)
    if strategy in ("repeat", "mean"):
        new *= c_src / in_channels
        info["scale"] = c_src / in_channels
    info["mapping"] = [str(src_of[b]) for b in range(in_channels)]
    info["bands_not_in_pretrained_set"] = others
    return new.to(weight.dtype), info


def _first_conv_key(model: nn.Module, in_channels: int) -> str:
    root = getattr(model, "encoder", model)
    prefix = "encoder." if root is not model else ""
    for name, mod in root.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == in_channels:
            return f"{prefix}{name}.weight"
    raise ModelError(f"Cannot find the first convolution (with {in_channels} input channels) of the model")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, a rasterlearn model package folder, or a torch/Lightning checkpoint.

    Torch files are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling); a Lightning
    checkpoint's ``state_dict`` and common wrappers (``model``, ``model_state``, ``module``, ``teacher`` of
    self-supervised checkpoints) are unwrapped. The one weight reader of training, prediction and
    :func:`rasterlearn.embed.load_state`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_FILE
    if not p.exists():
        raise InputNotFoundError(
            f"Weights file not found: {path} (give a .safetensors/.pt/.pth/.ckpt file or a "
            f"model package folder)"
        )
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(p))
    else:
        try:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"Cannot read weights from {p} with torch.load(weights_only=True): {_load_failure(exc)}. "
                f"Convert the checkpoint to safetensors or to a plain state dict (rasterlearn never "
                f"unpickles objects from a weights file)."
            ) from exc
    for key in ("state_dict", "model_state_dict", "model", "model_state", "module", "teacher"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ModelError(f"{p} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _load_failure(exc: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file (torch's own message runs over many
    lines and suggests loading with ``weights_only=False``, which rasterlearn never does)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found.group(1)} object"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return re.sub(r"\x1b\[[0-9;]*m", "", first) or type(exc).__name__


def transfer_weights(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    *,
    in_channels: int,
    strategy: ChannelStrategy = "repeat",
    rgb: Sequence[int] | None = None,
    only_encoder: bool = False,
    origin: str = "checkpoint",
) -> dict[str, Any]:
    """Copy matching tensors from ``source`` into ``model``; adapt the first layer to ``in_channels``.

    Keys are matched directly, or as encoder-only checkpoints (``encoder.``/``encoder.model.`` prefixes
    added). Tensors whose shape differs (e.g. a segmentation head for another number of classes) are skipped
    and logged. Returns a summary (loaded/skipped counts, first-layer adaptation).
    """
    target = model.state_dict()
    best_prefix, best_strip, best_hits = "", "", -1
    for strip in ("", "model.", "module.", "net.", "module.model."):
        for prefix in ("", "encoder.", "encoder.model."):
            hits = sum(1 for k in source if k.startswith(strip) and prefix + k[len(strip) :] in target)
            if hits > best_hits:
                best_prefix, best_strip, best_hits = prefix, strip, hits
    source = {k[len(best_strip) :]: v for k, v in source.items() if k.startswith(best_strip)}
    if best_hits <= 0:
        raise ModelError(
            f"No parameter of the {origin} matches the model (e.g. {next(iter(source), None)!r}); "
            f"is it for another architecture or encoder?"
        )
    first = _first_conv_key(model, in_channels)
    new_state = {}
    skipped: list[str] = []
    adaptation: dict[str, Any] | None = None
    for k, v in source.items():
        key = best_prefix + k
        if key not in target or (only_encoder and not key.startswith("encoder.")):
            continue
        tv = target[key]
        if tv.shape == v.shape:
            new_state[key] = v.to(tv.dtype)
        elif key == first and v.ndim == 4 and v.shape[0] == tv.shape[0] and v.shape[2:] == tv.shape[2:]:
            new_state[key], adaptation = adapt_first_layer(v, in_channels, strategy, rgb)
            adaptation["layer"] = key
            adaptation["origin"] = origin
        else:
            skipped.append(f"{key} {tuple(v.shape)}->{tuple(tv.shape)}")
    model.load_state_dict(new_state, strict=False)
    if adaptation is not None:
        lvl = logging.WARNING if strategy == "random" else logging.INFO
        log.log(
            lvl,
            "Adapted the pretrained first layer %s from %d to %d bands (strategy %r, source channel per "
            "band: %s)",
            first,
            adaptation["source_channels"],
            in_channels,
            strategy,
            adaptation["mapping"],
        )
    if skipped:
        log.info(
            "Not loaded from the %s (shape differs, left at initialisation): %s",
            origin,
            ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""),
        )
    info = {
        "origin": origin,
        "loaded": len(new_state),
        "skipped": skipped,
        "model_tensors": len(target),
        "first_layer": adaptation,
    }
    log.info("Loaded %d of %d tensors from the %s", len(new_state), len(target), origin)
    return info
