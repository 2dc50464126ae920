"""The architecture registry: :class:`ModelSpec` (name, smp architecture, size constraints, the tiny
configuration for tests), the built-in architectures, name lookup and chip-size checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rasterlearn.errors import ModelError

ChannelStrategy = Literal["repeat", "mean", "zeros", "random"]
CHANNEL_STRATEGIES: tuple[str, ...] = ("repeat", "mean", "zeros", "random")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One registered architecture.

    Attributes:
        name: registry name (lower case), e.g. ``unet``.
        smp_name: the segmentation-models-pytorch architecture it builds.
        description: one line for ``list_models`` tables and docs.
        min_size: smallest chip size (px) the architecture accepts with a 5-stage encoder.
        divisor: chip sizes should be multiples of this (encoder output stride).
        tiny_encoder: the smallest encoder known to work (tests, smoke runs).
        tiny_kwargs: factory arguments that shrink the decoder for tests and smoke runs.
        timm_only: only ``tu-`` (timm) encoders work (DPT needs a ViT).
    """

    name: str
    smp_name: str
    description: str
    min_size: int = 32
    divisor: int = 32
    tiny_encoder: str = "tu-mobilenetv3_small_050"
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    timm_only: bool = False


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES = {
    "unet++": "unetplusplus",
    "deeplabv3+": "deeplabv3plus",
    "deeplab": "deeplabv3plus",
    "mit": "segformer",
    "uper": "upernet",
}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry (names are case-insensitive)."""
    _REGISTRY[spec.name.lower()] = spec
    return spec


for _spec in (
    ModelSpec(
        "unet",
        "unet",
        "U-Net: encoder-decoder with skip connections (Ronneberger 2015)",
        tiny_kwargs={"decoder_channels": (16, 16, 8, 8, 8)},
    ),
    ModelSpec(
        "unetplusplus",
        "unetplusplus",
        "UNet++: nested dense skip pathways (Zhou 2018)",
        tiny_kwargs={"decoder_channels": (16, 16, 8, 8, 8)},
    ),
    ModelSpec(
        "manet",
        "manet",
        "MA-Net: multi-scale attention U-Net (Fan 2020)",
        tiny_kwargs={"decoder_channels": (16, 16, 8, 8, 8), "decoder_pab_channels": 8},
    ),
    ModelSpec("linknet", "linknet", "LinkNet: light encoder-decoder with residual links (Chaurasia 2017)"),
    ModelSpec(
        "fpn",
        "fpn",
        "Feature Pyramid Network decoder (Kirillov 2019)",
        tiny_kwargs={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    ),
    ModelSpec(
        "pspnet", "pspnet", "PSPNet: pyramid scene parsing (Zhao 2017)", tiny_kwargs={"psp_out_channels": 16}
    ),
    ModelSpec(
        "deeplabv3",
        "deeplabv3",
        "DeepLabV3: atrous spatial pyramid pooling (Chen 2017)",
        tiny_kwargs={"decoder_channels": 16},
    ),
    ModelSpec(
        "deeplabv3plus",
        "deeplabv3plus",
        "DeepLabV3+: ASPP with a light decoder (Chen 2018)",
        tiny_kwargs={"decoder_channels": 16},
    ),
    ModelSpec(
        "pan",
        "pan",
        "Pyramid Attention Network (Li 2018); needs chips of 128 px or more",
        min_size=128,
        tiny_kwargs={"decoder_channels": 16},
    ),
    ModelSpec(
        "upernet",
        "upernet",
        "UPerNet: unified perceptual parsing (Xiao 2018)",
        tiny_kwargs={"decoder_channels": 16},
    ),
    ModelSpec(
        "segformer",
        "segformer",
        "SegFormer all-MLP decoder (Xie 2021); any encoder, best with mit_b*",
        tiny_kwargs={"decoder_segmentation_channels": 16},
    ),
    ModelSpec(
        "dpt",
        "dpt",
        "DPT: dense prediction transformer over a timm ViT encoder (Ranftl 2021)",
        divisor=16,
        tiny_encoder="tu-test_vit",
        timm_only=True,
        tiny_kwargs={"decoder_intermediate_channels": (8, 8, 8, 8), "decoder_fusion_channels": 8},
    ),
):
    register_model(_spec)


def list_models() -> list[str]:
    """Names of the registered architectures, in registry order."""
    return list(_REGISTRY)


def model_spec(arch: str) -> ModelSpec:
    """The :class:`ModelSpec` of an architecture name (case-insensitive; aliases like ``unet++`` accepted)."""
    key = arch.lower().replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ModelError(f"Unknown architecture {arch!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def check_chip_size(arch: str, size: int) -> None:
    """Raise :class:`ModelError` when ``size`` is too small or not a multiple the architecture needs."""
    spec = model_spec(arch)
    if size < spec.min_size:
        raise ModelError(
            f"{spec.name} needs chips of at least {spec.min_size} px; the data has {size} px chips. "
            f"Re-cut chips with a larger --size or choose another --arch."
        )
    if size % spec.divisor:
        raise ModelError(
            f"{spec.name} needs a chip size that is a multiple of {spec.divisor}; got {size}. "
            f"Re-cut chips (e.g. --size {size - size % spec.divisor or spec.divisor})."
        )
