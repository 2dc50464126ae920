"""Backbones of :func:`rasterlearn.embed.embed`: the recommended models, timm feature extractors and their weights.

:func:`load_backbone` builds a :class:`Backbone` in steps: check the name (:func:`_check_name`), create the
timm model with pretrained weights, none (seeded random init) or a local checkpoint (:func:`_create_net`,
:func:`_load_checkpoint`: safetensors or ``torch.load(weights_only=True)``, first layer adapted to the
bands), then read its geometry: the patch grid of a ViT (:func:`_vit_backbone`) or a CNN stage's reduction
(:func:`_cnn_backbone`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rasterlearn.errors import ConfigError, InputNotFoundError, ModelError
from rasterlearn.weights import seeded_init

log = logging.getLogger("rasterlearn.embed")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A recommended backbone: timm name, family, patch size (ViT) or stride (CNN), feature dimension."""

    name: str
    family: Literal["vit", "cnn"]
    patch_size: int
    feature_dim: int
    default_size: int
    notes: str


RECOMMENDED_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            "vit_small_patch14_dinov2.lvd142m",
            "vit",
            14,
            384,
            518,
            "DINOv2 ViT-S/14: strong general-purpose features; the usual first choice",
        ),
        ModelInfo(
            "vit_small_patch14_reg4_dinov2.lvd142m",
            "vit",
            14,
            384,
            518,
            "DINOv2 ViT-S/14 with 4 register tokens: cleaner feature maps",
        ),
        ModelInfo("vit_base_patch14_dinov2.lvd142m", "vit", 14, 768, 518, "DINOv2 ViT-B/14: richer, slower"),
        ModelInfo(
            "vit_base_patch14_reg4_dinov2.lvd142m", "vit", 14, 768, 518, "DINOv2 ViT-B/14 with registers"
        ),
        ModelInfo(
            "vit_tiny_patch16_224.augreg_in21k", "vit", 16, 192, 224, "ViT-Ti/16: fastest ViT, for CPUs"
        ),
        ModelInfo("vit_small_patch16_224.augreg_in21k", "vit", 16, 384, 224, "ViT-S/16 (ImageNet-21k)"),
        ModelInfo("vit_base_patch16_224.augreg_in21k", "vit", 16, 768, 224, "ViT-B/16 (ImageNet-21k)"),
        ModelInfo("convnext_tiny.fb_in22k", "cnn", 32, 768, 224, "ConvNeXt-T, last stage (stride 32)"),
        ModelInfo("resnet50.a1_in1k", "cnn", 32, 2048, 224, "ResNet-50, last stage (stride 32)"),
        ModelInfo("resnet18.a1_in1k", "cnn", 32, 512, 224, "ResNet-18, last stage: small and fast"),
    )
}


# -- backbones ----------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A timm model that maps ``(B, in_chans, S, S)`` to a feature map ``(B, dim, S/stride, S/stride)``.

    Attributes:
        name: timm model name.
        family: ``vit`` (one feature pixel per patch) or ``cnn`` (a stage's feature map).
        stride: input pixels per feature pixel (patch size or stage reduction).
        dim: features per pixel.
        layer: the block (ViT) or stage (CNN) index the features come from.
        mean, std: the model's own normalization (for 0..1 inputs), from its pretrained config.
        fixed_size: the input size a ViT was built for (``None`` for CNNs, which take any multiple of stride).
        random_weights: ``True`` when built without pretrained weights or a checkpoint (seeded random init).
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        family: Literal["vit", "cnn"],
        layer: int,
        stride: int,
        dim: int,
        fixed_size: int | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.family = family
        self.layer = layer
        self.stride = stride
        self.dim = dim
        self.fixed_size = fixed_size
        self.random_weights = False
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model: Any = self.model  # a timm model (forward_intermediates is not on nn.Module)
        if self.family == "vit":
            # timm strips the prefix (class + register) tokens with the model's own num_prefix_tokens and
            # reshapes to the patch grid it computed: no square-root guess.
            out = model.forward_intermediates(
                x, indices=[self.layer], norm=True, output_fmt="NCHW", intermediates_only=True
            )
        else:
            out = model.forward_intermediates(x, indices=[self.layer], intermediates_only=True)
        feats = out[0]
        expect = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        if tuple(feats.shape[-2:]) != expect:
            raise ModelError(
                f"{self.name} returned a {tuple(feats.shape[-2:])} feature map for a "
                f"{tuple(x.shape[-2:])} input; expected {expect} at stride {self.stride}"
            )
        return feats


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin``/``.ckpt`` checkpoint through the one weight reader,
    :func:`rasterlearn.models.weights.read_state_dict` (``torch.load(weights_only=True)``, wrappers such as
    ``state_dict``/``model``/``teacher`` unwrapped), and drop a backbone's ``module.``/``model.``/``backbone.``
    key prefix."""
    from rasterlearn.models.weights import read_state_dict

    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"Checkpoint not found: {p}")
    out = {}
    for k, v in read_state_dict(p).items():
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        out[k] = v
    return out


def _adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-layer conv weight (O, I, k, k) to ``in_chans`` inputs (timm's rule for RGB weights)."""
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if have == 3:
        from timm.models._manipulate import adapt_input_conv

        return adapt_input_conv(in_chans, weight)
    reps = math.ceil(in_chans / have)
    w = weight.repeat(1, reps, 1, 1)[:, :in_chans] * (have / in_chans)
    return w.to(weight.dtype)


def load_backbone(
    model: str,
    *,
    checkpoint: str | Path | None = None,
    in_chans: int = 3,
    input_size: int | None = None,
    layer: int | None = None,
    pretrained: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> Backbone:
    """Build a feature extractor from a timm name, an ``hf-hub:`` name or a local checkpoint.

    Args:
        model: timm model name (``vit_small_patch14_dinov2.lvd142m``, ``resnet50``, ...) or ``hf-hub:org/repo``.
        checkpoint: local ``.safetensors``/``.pth`` weights for that architecture (no download). Its first
            layer is adapted when its input channels differ from ``in_chans``; ViT position embeddings are
            resampled to ``input_size``.
        in_chans: number of input bands (timm ``in_chans``; pretrained RGB weights are adapted).
        input_size: model input size in pixels (ViTs are built for it; position embeddings resampled).
        layer: transformer block (ViT) or stage index (CNN; timm ``feature_info``); default: the last.
            Negative values count from the end.
        pretrained: download pretrained weights (ignored when ``checkpoint`` is given).
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"depth": 6}`` for a custom checkpoint).
        seed: seed of the random initialisation when there are neither pretrained weights nor a checkpoint
            (the same seed gives the same network; the caller's random state is left untouched).
    """
    base = _check_name(model)
    use_pretrained = bool(pretrained and checkpoint is None)
    net = _create_net(model, use_pretrained, in_chans, input_size, model_kwargs, seed)
    if checkpoint is not None:
        _load_checkpoint(net, Path(checkpoint), in_chans)
    is_vit = hasattr(net, "patch_embed") and hasattr(net, "num_prefix_tokens") and hasattr(net, "blocks")
    bb = _vit_backbone(net, model, base, layer) if is_vit else _cnn_backbone(net, model, base, layer)
    bb.random_weights = not use_pretrained and checkpoint is None
    return bb.eval()


def _check_name(model: str) -> str:
    """The timm name of ``model`` without an ``hf-hub:`` prefix; an unknown timm name is an error."""
    import timm

    name = model
    base = name[len("hf-hub:") :] if name.startswith("hf-hub:") else name
    if not name.startswith("hf-hub:") and not timm.is_model(base):
        close = timm.list_models(f"*{base.split('.')[0].split('_')[0]}*")[:10]
        raise ModelError(
            f"Unknown timm model {model!r}. Similar names: {', '.join(close) or '(none)'}. "
            f"Recommended: {', '.join(RECOMMENDED_MODELS)}"
        )
    return base


def _create_net(
    model: str,
    use_pretrained: bool,
    in_chans: int,
    input_size: int | None,
    model_kwargs: dict[str, Any] | None,
    seed: int,
) -> Any:
    """``timm.create_model`` without a head (seeded when random), built for ``input_size`` when it can be."""
    import timm

    name = model
    kwargs: dict[str, Any] = {**(model_kwargs or {}), "num_classes": 0, "in_chans": in_chans}
    net: Any
    try:
        with seeded_init(seed):
            try:
                size_kw: dict[str, Any] = {"img_size": input_size} if input_size else {}
                net = timm.create_model(name, pretrained=use_pretrained, **kwargs, **size_kw)
            except TypeError:
                net = timm.create_model(name, pretrained=use_pretrained, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"Cannot create {model!r} (pretrained={use_pretrained}): {exc}. Without internet, give "
            f"--checkpoint with local weights."
        ) from exc
    if not hasattr(net, "forward_intermediates"):
        raise ModelError(
            f"{model!r} has no forward_intermediates in timm {timm.__version__}; choose a ViT, "
            f"ConvNeXt, ResNet or another model listed by timm with feature extraction support"
        )
    return net


def _vit_backbone(net: Any, model: str, base: str, layer: int | None) -> Backbone:
    """A ViT's features: one pixel per patch, from block ``layer`` (default: the last)."""
    n_blocks = len(net.blocks)
    idx = n_blocks - 1 if layer is None else (layer % n_blocks if -n_blocks <= layer < n_blocks else None)
    if idx is None:
        raise ConfigError(f"layer {layer} does not exist: {model} has blocks 0..{n_blocks - 1}")
    patch = net.patch_embed.patch_size
    if patch[0] != patch[1]:
        raise ModelError(f"{model} has non-square patches {patch}; not supported")
    grid = net.patch_embed.grid_size
    fixed = None if getattr(net.patch_embed, "dynamic_img_size", False) else int(grid[0] * patch[0])
    bb = Backbone(net, base, "vit", idx, int(patch[0]), int(net.num_features), fixed)
    log.info(
        "Backbone %s: ViT, patch %d, %d features, %d prefix tokens (incl. registers), block %d",
        base,
        patch[0],
        bb.dim,
        net.num_prefix_tokens,
        idx,
    )
    return bb


def _cnn_backbone(net: Any, model: str, base: str, layer: int | None) -> Backbone:
    """A CNN's features: the feature map of stage ``layer`` (timm ``feature_info``; default: the last)."""
    info = list(net.feature_info)
    n = len(info)
    idx = n - 1 if layer is None else (layer % n if -n <= layer < n else None)
    if idx is None:
        raise ConfigError(
            f"layer {layer} does not exist: {model} has stages 0..{n - 1} "
            f"({', '.join(str(i['module']) for i in info)})"
        )
    bb = Backbone(net, base, "cnn", idx, int(info[idx]["reduction"]), int(info[idx]["num_chs"]), None)
    log.info(
        "Backbone %s: CNN stage %d (%s), stride %d, %d features",
        base,
        idx,
        info[idx]["module"],
        bb.stride,
        bb.dim,
    )
    return bb


def _load_checkpoint(net: nn.Module, path: Path, in_chans: int) -> None:
    """Load local weights into ``net`` (timm's own filter, first conv adapted to ``in_chans``); weights the
    features need and the checkpoint lacks, or shapes that differ, are errors."""
    import sys

    state = load_state(path)
    filt = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if filt is not None:
        with contextlib.suppress(Exception):
            state = filt(state, net)
    first = (getattr(net, "pretrained_cfg", None) or {}).get("first_conv")
    firsts = [first] if isinstance(first, str) else list(first or [])
    for conv in firsts:
        key = f"{conv}.weight"
        if key in state and state[key].ndim == 4 and state[key].shape[1] != in_chans:
            log.info(
                "Adapting %s of %s from %d to %d input channels",
                key,
                path.name,
                state[key].shape[1],
                in_chans,
            )
            state[key] = _adapt_in_chans(state[key], in_chans)
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ModelError(
            f"Checkpoint {path} does not fit {type(net).__name__}: shape mismatch for "
            f"{mismatched[:5]} (e.g. {tuple(state[mismatched[0]].shape)} vs "
            f"{tuple(own[mismatched[0]].shape)}). Check --model matches the checkpoint."
        )
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("head", "fc.", "classifier"))]
    if missing:
        raise ModelError(
            f"Checkpoint {path} lacks {len(missing)} weights of the model (e.g. {missing[:5]}); "
            f"is it for another architecture?"
        )
    if unexpected:
        log.info(
            "Ignored %d checkpoint entries not used for features (e.g. %s)", len(unexpected), unexpected[:3]
        )


def _pick_device(device: str) -> torch.device:
    """The torch device for ``auto`` (CUDA, else MPS, else CPU) or a named one, checked to exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:1 or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    return dev


def iter_recommended() -> Iterator[ModelInfo]:
    """The curated models, in order."""
    yield from RECOMMENDED_MODELS.values()
