"""Pretrained encoder weights without a network: where they come from and what to do when offline.

smp encoders (``resnet18`` + ``imagenet`` ...) and timm encoders (``tu-<name>``) download their weights
from the Hugging Face Hub into its cache (``HF_HOME``, default ``~/.cache/huggingface``; older torchvision
URLs go to ``TORCH_HOME``, default ``~/.cache/torch``). Both libraries look in those caches first, so weights
fetched once on a connected machine and copied over work offline. :func:`pretrained_error` turns a failed
download into one line that says how to fetch the weights and where to put them; local files are loaded
with ``--weights FILE`` (``.safetensors``, or ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``;
see :func:`rasterlearn.models.read_state_dict`).
"""

from __future__ import annotations

import os
from pathlib import Path

from rasterlearn.errors import ModelError

__all__ = ["hub_caches", "is_download_error", "pretrained_error", "pretrained_repo"]


def hub_caches() -> dict[str, Path]:
    """The cache folders the hub libraries use here (environment variables honoured)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    hf = Path(os.environ.get("HF_HOME") or cache / "huggingface")
    torch_home = Path(os.environ.get("TORCH_HOME") or cache / "torch")
    return {"HF_HOME": hf, "TORCH_HOME": torch_home}


def pretrained_repo(encoder: str, weights: str) -> str | None:
    """The Hugging Face repository holding ``weights`` of ``encoder`` (``None`` when unknown)."""
    try:
        if encoder.startswith("tu-"):
            import timm

            cfg = timm.models.get_pretrained_cfg(encoder[3:])
            return getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        from segmentation_models_pytorch.encoders import encoders

        return str(encoders[encoder]["pretrained_settings"][weights]["repo_id"])
    except Exception:  # unknown names are reported by the model factory itself
        return None


def is_download_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a failed download / missing cache entry rather than a bad name."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (OSError, ConnectionError, TimeoutError)) or name in (
            "LocalEntryNotFoundError",
            "OfflineModeIsEnabled",
            "HfHubHTTPError",
            "URLError",
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def pretrained_error(encoder: str, weights: str, exc: BaseException) -> ModelError:
    """One line: the weights could not be fetched; how to fetch them on a connected machine; where to put them."""
    repo = pretrained_repo(encoder, weights)
    caches = hub_caches()
    fetch = (
        f"'hf download {repo}' (or 'huggingface-cli download {repo}')"
        if repo
        else f"'rasterlearn train ... --encoder {encoder} --pretrained {weights}' once"
    )
    text = str(exc).strip()
    reason = (text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__)[:200]
    return ModelError(
        f"Cannot get pretrained weights {weights!r} for encoder {encoder!r} (no network or not cached: "
        f"{reason}). On a connected machine run {fetch}, then copy its Hugging Face cache to "
        f"{caches['HF_HOME']} here (set HF_HOME to use another folder); or save the encoder weights as a "
        f".safetensors/.pth file and pass --weights FILE instead of --pretrained."
    )
