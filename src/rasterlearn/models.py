"""Segmentation model factory and the self-describing *model package*.

A model package is a folder holding ``model.safetensors`` (weights, no pickle) and ``model.json``
(:class:`ModelMetadata`: architecture and its arguments, bands, normalization, class schema, chip size,
ground sample distance, CRS units, training summary, library versions). :func:`load_package` rebuilds the
model from these two files alone.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rasterlearn._util import atomic_write, atomic_write_text
from rasterlearn.errors import InputNotFoundError, ModelError
from rasterlearn.labels import ClassSchema
from rasterlearn.normalize import Normalization

__all__ = [
    "CHANNEL_STRATEGIES",
    "PACKAGE_FORMAT",
    "ModelMetadata",
    "ModelPackage",
    "ModelSpec",
    "adapt_first_layer",
    "check_chip_size",
    "create_model",
    "freeze_encoder",
    "library_versions",
    "list_models",
    "load_package",
    "model_spec",
    "read_state_dict",
    "register_model",
    "rgb_band_indexes",
    "save_package",
    "tiny_model",
    "transfer_weights",
]

log = logging.getLogger(__name__)

PACKAGE_FORMAT = "rasterlearn-model/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class ModelMetadata(BaseModel):
    """Everything inference needs besides the weights (stored as ``model.json``)."""

    model_config = ConfigDict(extra="forbid")

    format: str = PACKAGE_FORMAT
    arch: str = Field(description="architecture name in the registry, e.g. 'unet'")
    encoder: str = Field(description="encoder name (smp name or 'tu-<timm name>')")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra factory arguments")
    in_channels: int
    num_classes: int = Field(description="model output channels (1 for a binary sigmoid model)")
    task: str = Field("multiclass", description="'multiclass' (softmax) or 'binary' (sigmoid)")
    bands: list[str] = Field(description="band names, in the order the model expects them")
    band_indexes: list[int] | None = Field(None, description="1-based band indexes in the training rasters")
    normalization: dict[str, Any]
    schema_: dict[str, Any] = Field(
        alias="schema", description="class schema (codes, names, colours, ignore)"
    )
    chip_size: int
    gsd: float | None = Field(None, description="ground sample distance of the training data")
    crs_units: str | None = None
    input_dtype: str | None = None
    input_nodata: float | None = None
    threshold: float = 0.5
    training: dict[str, Any] = Field(default_factory=dict, description="training data and run summary")
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def class_schema(self) -> ClassSchema:
        return ClassSchema.from_dict(self.schema_)

    @property
    def norm(self) -> Normalization:
        return Normalization.from_dict(self.normalization)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


@dataclass
class ModelPackage:
    """A loaded model (eval mode, CPU) and its metadata."""

    model: nn.Module
    meta: ModelMetadata
    path: Path | None = None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's behaviour."""
    return dict(_library_versions())


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("rasterlearn", "torch", "segmentation-models-pytorch", "timm", "numpy", "rasterio"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# Factory, first-layer adaptation, local weights
# ---------------------------------------------------------------------------------------------------
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


def _is_local_weights(weights: str | Path | None) -> bool:
    if weights is None:
        return False
    p = Path(str(weights))
    return p.exists() or p.suffix.lower() in (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, a rasterlearn model package folder, or a torch/Lightning checkpoint.

    Torch files are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling); a Lightning
    checkpoint's ``state_dict`` and common wrappers (``model``, ``state_dict``, ``module.`` prefixes) are
    unwrapped.
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
                f"Cannot read weights from {p} with torch.load(weights_only=True): {exc}. Convert the "
                f"checkpoint to safetensors or to a plain state dict."
            ) from exc
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ModelError(f"{p} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


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
    import segmentation_models_pytorch as smp

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

    model = build(in_channels, None)
    info: dict[str, Any] = {"weights": None if weights is None else str(weights)}
    if weights is not None and _is_local_weights(weights):
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
    elif weights is not None:
        if in_channels == 3:
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
    model.init_info = info  # type: ignore[assignment]
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


def save_package(model: nn.Module, meta: ModelMetadata, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``folder`` (atomically, file by file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not meta.versions:
        meta = meta.model_copy(update={"versions": library_versions()})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = _dedupe_shared(state)
    atomic_write(
        folder / WEIGHTS_FILE, lambda tmp: save_file(weights, str(tmp), metadata={"format": PACKAGE_FORMAT})
    )
    atomic_write_text(folder / META_FILE, meta.to_json())
    return folder


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory; clone the later ones."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        if ptr != -1:
            seen.add(ptr)
    return out


def load_metadata(folder: str | Path) -> ModelMetadata:
    folder = Path(folder)
    meta_path = folder / META_FILE if folder.is_dir() else folder
    if not meta_path.exists():
        raise InputNotFoundError(
            f"No model package at {folder}: expected {META_FILE} and {WEIGHTS_FILE} "
            f"(written by 'rasterlearn train')"
        )
    try:
        return ModelMetadata.model_validate(json.loads(meta_path.read_text(encoding="utf-8")))
    except Exception as exc:
        raise ModelError(f"{meta_path} is not a valid rasterlearn model description: {exc}") from exc


def load_package(folder: str | Path, device: str | torch.device = "cpu") -> ModelPackage:
    """Rebuild a model from a package folder (no pickle: weights are safetensors)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = load_metadata(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise InputNotFoundError(f"{weights} is missing from the model package {folder}")
    model = create_model(
        meta.arch, meta.encoder, meta.in_channels, meta.num_classes, weights=None, **meta.model_kwargs
    )
    state = load_file(str(weights), device=str(device))
    from rasterlearn.compat import check_first_layer

    check_first_layer(model.state_dict(), state, meta.in_channels, str(folder))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"Weights in {weights} do not fit {meta.arch}/{meta.encoder}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.to(device).eval()
    return ModelPackage(model, meta, folder)
