"""Building models: :func:`create_model` (an smp architecture from the registry, with random, pretrained or
local weights), :func:`tiny_model` and :func:`freeze_encoder`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from rasterlearn.errors import ModelError
from rasterlearn.models.registry import ChannelStrategy, ModelSpec, model_spec
from rasterlearn.models.weights import read_state_dict, transfer_weights


def create_model(
    arch: str,
    encoder: str = "resnet18",
    in_channels: int = 3,
    classes: int = 2,
    weights: str | Path | None = None,
    *,
    channel_strategy: ChannelStrategy = "repeat",
    rgb_bands: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a segmentation model by architecture name (segmentation-models-pytorch under a registry).

    Args:
        arch: a name from :func:`list_models` (``unet``, ``unetplusplus``, ``deeplabv3plus``, ``fpn``,
            ``pspnet``, ``manet``, ``linknet``, ``pan``, ``upernet``, ``segformer``, ``deeplabv3``, ``dpt``).
        encoder: smp encoder name (``resnet18``, ``mit_b0`` ...) or ``tu-<timm model>`` (``tu-`` + an
            ``hf-hub:`` name works too).
        in_channels: number of input bands (any; pretrained first layers are adapted, see
            :func:`adapt_first_layer`).
        classes: output channels (1 for a sigmoid binary model).
        weights: ``None`` (random init), a pretrained weights name (``imagenet`` ...; downloads through
            smp/timm on first use), or a local file/package folder (see :func:`read_state_dict`).
        channel_strategy: how pretrained RGB first-layer kernels are adapted to ``in_channels`` bands.
        rgb_bands: 0-based indexes of the red, green and blue input bands (default: the first three).
        **kwargs: architecture arguments passed to smp (e.g. ``decoder_channels``). ``temporal``
            (``early`` or ``siamese``) with ``timesteps`` builds a multi-date change model for
            ``in_channels = timesteps x bands`` (see :mod:`rasterlearn.models_temporal`).

    The model gets an ``init_info`` attribute (dict) describing where its weights came from.
    """
    if kwargs.get("temporal") is not None:
        from rasterlearn.models_temporal import create_temporal_model

        return create_temporal_model(
            arch,
            encoder,
            in_channels,
            classes,
            weights,
            channel_strategy=channel_strategy,
            rgb_bands=rgb_bands,
            **kwargs,
        )
    kwargs.pop("temporal", None)

    spec = model_spec(arch)
    if spec.timm_only and not encoder.startswith("tu-"):
        raise ModelError(
            f"{spec.name} only works with timm ViT encoders ('tu-...', e.g. "
            f"'tu-vit_small_patch16_224'); got {encoder!r}"
        )
    if in_channels < 1 or classes < 1:
        raise ModelError(f"in_channels and classes must be >= 1; got {in_channels}, {classes}")
    build = _smp_builder(spec, encoder, classes, kwargs)
    model = build(in_channels, None)
    info: dict[str, Any] = {"weights": None if weights is None else str(weights)}
    if weights is not None:
        model = _initial_weights(
            model, build, encoder, in_channels, weights, channel_strategy, rgb_bands, info
        )
    model.init_info = info  # type: ignore[assignment]
    return model


def _smp_builder(
    spec: ModelSpec, encoder: str, classes: int, kwargs: dict[str, Any]
) -> Callable[[int, str | None], nn.Module]:
    """``build(in_channels, encoder_weights)``: the smp model of ``spec`` (a failure becomes a ModelError)."""
    import segmentation_models_pytorch as smp

    def build(ch: int, enc_weights: str | None) -> nn.Module:
        try:
            return smp.create_model(
                spec.smp_name,
                encoder_name=encoder,
                encoder_weights=enc_weights,
                in_channels=ch,
                classes=classes,
                **kwargs,
            )
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise ModelError(
                f"Cannot build {spec.name} with encoder {encoder!r} ({exc}). List architectures with "
                f"'rasterlearn models'; smp encoders or 'tu-<timm name>' are accepted."
            ) from exc

    return build


def _initial_weights(
    model: nn.Module,
    build: Callable[[int, str | None], nn.Module],
    encoder: str,
    in_channels: int,
    weights: str | Path,
    channel_strategy: ChannelStrategy,
    rgb_bands: Sequence[int] | None,
    info: dict[str, Any],
) -> nn.Module:
    """Load ``weights`` (a local file / package, else a pretrained name) into a freshly built ``model``
    (a pretrained 3-band model is built anew); what was loaded goes into ``info``."""
    if _is_local_weights(weights):
        info.update(
            transfer_weights(
                model,
                read_state_dict(weights),
                in_channels=in_channels,
                strategy=channel_strategy,
                rgb=rgb_bands,
                origin=f"checkpoint {weights}",
            )
        )
    elif in_channels == 3:
        model = _build_pretrained(build, encoder, str(weights))
        info["first_layer"] = None
    else:
        source = _build_pretrained(build, encoder, str(weights)).state_dict()
        info.update(
            transfer_weights(
                model,
                source,
                in_channels=in_channels,
                strategy=channel_strategy,
                rgb=rgb_bands,
                only_encoder=True,
                origin=f"pretrained {weights!r}",
            )
        )
    return model


def _build_pretrained(build: Callable[[int, str | None], nn.Module], encoder: str, weights: str) -> nn.Module:
    """``build(3, weights)``; a failed download becomes one line on how to get the weights offline."""
    from rasterlearn.hub_weights import is_download_error, pretrained_error

    try:
        return build(3, weights)
    except ModelError as exc:
        if is_download_error(exc):
            raise pretrained_error(encoder, weights, exc) from exc
        raise
    except Exception as exc:
        if is_download_error(exc):
            raise pretrained_error(encoder, weights, exc) from exc
        raise


def _is_local_weights(weights: str | Path | None) -> bool:
    if weights is None:
        return False
    p = Path(str(weights))
    return p.exists() or p.suffix.lower() in (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def tiny_model(arch: str, in_channels: int, classes: int, **kwargs: Any) -> nn.Module:
    """The smallest working configuration of an architecture (tests, smoke runs, benchmarks)."""
    spec = model_spec(arch)
    return create_model(spec.name, spec.tiny_encoder, in_channels, classes, **{**spec.tiny_kwargs, **kwargs})


def freeze_encoder(model: nn.Module, frozen: bool = True) -> int:
    """Freeze (``requires_grad=False``, BatchNorm in eval mode) or unfreeze the encoder; returns #tensors."""
    enc = getattr(model, "encoder", None)
    if enc is None:
        raise ModelError("This model has no 'encoder' to freeze")
    n = 0
    for p in enc.parameters():
        p.requires_grad_(not frozen)
        n += 1
    if frozen:
        enc.eval()
    return n
