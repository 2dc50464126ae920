"""Foundation-model feature rasters: encode any raster with a timm backbone into a feature COG.

The raster is cut into tiles of ``size`` pixels every ``stride`` pixels (:func:`rasterlearn.grid.plan_tiles`,
edge policy ``pad``), each tile is normalized (nodata-aware), resized to the model input size when that
differs, and encoded. A Vision Transformer gives one feature pixel per patch (the model's own
``num_prefix_tokens``/register tokens are dropped by timm's ``forward_intermediates``, never guessed from a
square root); a CNN gives the feature map of a chosen stage. The output grid is exact: its transform is the
input grid (or the extent's origin) scaled by the *effective stride* (the patch size or stage reduction in
raster pixels), and every tile lands on whole feature pixels of it.

Overlapping tiles are merged by a true weighted mean (``average``), or ``first`` tile wins, or each tile keeps
its centre (``center``). Memory is bounded by neither height nor width (:mod:`rasterlearn.embed_stream`):
only the feature rows touched by the tile rows in flight are held, finished strips are flushed to
:class:`rasterlearn.io.writer.BlockWriter`, and a raster too wide for ``memory_mb`` is encoded in column
stripes planned by :func:`rasterlearn.grid.plan_column_stripes`, as ``predict`` does. Tiles without a valid
pixel never reach the model.

Sessions: every parameter that changes the result is canonicalized and hashed; the run lives in
``<cache_dir>/<hash>/`` with ``parameters.json`` and the writer's partial/progress files, and
``<cache_dir>/index.json`` lists the sessions. A killed run started again with the same parameters resumes
from the last committed strip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rasterlearn._signals import interrupt_on_sigterm
from rasterlearn._util import (
    atomic_write_json,
    disk_full_error,
    file_identity,
    file_sha256,
    is_disk_full,
    move_file,
)
from rasterlearn.embed_stream import StreamJob, encoder, feature_bytes_per_column, run_stripes
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor
from rasterlearn.errors import ConfigError, InputNotFoundError, ModelError, OutputError
from rasterlearn.grid import Bounds, Grid, Window, plan_column_stripes, plan_tiles
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader, band_statistics, gdal_cache
from rasterlearn.io.writer import BlockWriter
from rasterlearn.normalize import Normalization
from rasterlearn.weights import seeded_init, state_digest

__all__ = [
    "RECOMMENDED_MODELS",
    "Backbone",
    "EmbedResult",
    "FeatureLayout",
    "ModelInfo",
    "embed",
    "feature_layout",
    "list_sessions",
    "load_backbone",
    "session_hash",
]

log = logging.getLogger(__name__)

MergeMode = Literal["average", "first", "center"]
NormMode = Literal["image", "model", "none"]
Storage = Literal["float32", "float16", "uint16"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"] | str

SESSION_FORMAT = "rasterlearn-embed/1"


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


def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state", "module", "teacher"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"{path} does not hold a state dict of tensors (keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj)})"
        )
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        out[k] = v
    return out


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` checkpoint (``torch.load(weights_only=True)``)."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"Checkpoint not found: {p}")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap_state(load_file(str(p)), p)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"Cannot load {p} with torch.load(weights_only=True): {exc}. Only plain weight files "
            f"are accepted (no pickled code); convert it to .safetensors."
        ) from exc
    return _unwrap_state(obj, p)


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
    import timm

    name = model
    base = name[len("hf-hub:") :] if name.startswith("hf-hub:") else name
    if not name.startswith("hf-hub:") and not timm.is_model(base):
        close = timm.list_models(f"*{base.split('.')[0].split('_')[0]}*")[:10]
        raise ModelError(
            f"Unknown timm model {model!r}. Similar names: {', '.join(close) or '(none)'}. "
            f"Recommended: {', '.join(RECOMMENDED_MODELS)}"
        )
    use_pretrained = bool(pretrained and checkpoint is None)
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
    if checkpoint is not None:
        _load_checkpoint(net, Path(checkpoint), in_chans)
    is_vit = hasattr(net, "patch_embed") and hasattr(net, "num_prefix_tokens") and hasattr(net, "blocks")
    if is_vit:
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
    else:
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
    bb.random_weights = not use_pretrained and checkpoint is None
    return bb.eval()


def _load_checkpoint(net: nn.Module, path: Path, in_chans: int) -> None:
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


# -- geometry of the feature grid ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """How tiles map onto the feature grid.

    Attributes:
        size, stride: tile size and step in raster pixels.
        input_size: model input size (tiles are resized to it when it differs from ``size``).
        feat_size: feature pixels per tile side; ``feat_stride``: feature pixels between tiles.
        factor: raster pixels per feature pixel (``size / feat_size``; the effective stride).
    """

    size: int
    stride: int
    input_size: int
    model_stride: int
    feat_size: int
    feat_stride: int

    @property
    def factor(self) -> float:
        return self.size / self.feat_size


def feature_layout(size: int, stride: int, model_stride: int, input_size: int | None = None) -> FeatureLayout:
    """Check that tiles of ``size`` every ``stride`` land on whole feature pixels and return the layout.

    Raises:
        ConfigError: the input size is not a multiple of the model stride, or the tile stride is not a whole
            number of feature pixels (the message suggests valid values).
    """
    if size <= 0 or stride <= 0 or stride > size:
        raise ConfigError(f"need 0 < stride <= size, got size={size}, stride={stride}")
    inp = size if input_size is None else int(input_size)
    if inp % model_stride:
        lo = max(model_stride, inp // model_stride * model_stride)
        raise ConfigError(
            f"model input size {inp} is not a multiple of the model's patch/stride {model_stride}: "
            f"use --size (or --input-size) {lo} or {lo + model_stride}"
        )
    feat = inp // model_stride
    fstride = stride * feat / size
    if abs(fstride - round(fstride)) > 1e-9 or round(fstride) < 1:
        step = size // math.gcd(size, feat)
        ok = [s for s in range(step, size + 1, step)]
        raise ConfigError(
            f"stride {stride} px is not a whole number of feature pixels ({size} px tiles give "
            f"{feat} feature pixels): choose a stride among {ok[:8]}"
        )
    return FeatureLayout(size, stride, inp, model_stride, feat, round(fstride))


# -- sessions -----------------------------------------------------------------------------------


def _file_identity(path: str | Path, content_hash: bool = False) -> dict[str, Any]:
    """Path/size/mtime of an input, or (``content_hash``) its SHA-256 and size, e.g. for checkpoints."""
    if content_hash:
        return {"sha256": file_sha256(path), "size": Path(path).stat().st_size}
    return file_identity(path)


def _canonical(value: Any) -> Any:
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
    atomic_write_json(path, data, default=str)


_INDEX_LOCK = threading.Lock()


def _update_index(cache_dir: Path, key: str, entry: dict[str, Any]) -> None:
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


# -- the embed stage ----------------------------------------------------------------------------


@dataclass
class EmbedResult:
    """What :func:`embed` produced."""

    path: Path
    session: Path
    session_id: str
    grid: Grid
    dim: int
    tiles: int
    tiles_skipped: int
    resumed: bool
    seconds: float
    model_seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)
    stripes: int = 1
    peak_buffer_mb: float = 0.0


def _pick_device(device: str) -> torch.device:
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


def _model_normalization(
    backbone: Backbone, reader: RasterReader, value_scale: float | None
) -> tuple[Normalization, float]:
    dtype = np.dtype(reader.dtype)
    if value_scale is None:
        value_scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        log.info(
            "Model normalization: input %s values divided by %g before the model's mean/std "
            "(set value_scale to change)",
            dtype,
            value_scale,
        )
    n = reader.count
    mean, std = backbone.mean, backbone.std
    if n == len(mean):
        m, s = mean, std
    elif n == 1:
        m, s = (float(np.mean(mean)),), (float(np.mean(std)),)
    else:
        m = tuple(mean[i % len(mean)] for i in range(n))
        s = tuple(std[i % len(std)] for i in range(n))
        log.info("Model mean/std has %d values for %d bands: repeated cyclically", len(mean), n)
    return Normalization(
        "zscore", tuple(v * value_scale for v in m), tuple(v * value_scale for v in s)
    ), value_scale


class _WarpedSource:
    """A GDAL warped VRT file (target CRS/resolution) written into the session folder."""

    @staticmethod
    def build(path: str, dst: Path, crs: str | None, resolution: float | None, resampling: str) -> Path:
        import rasterio
        import rasterio.shutil
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import calculate_default_transform

        try:
            rs = Resampling[resampling]
        except KeyError as exc:
            raise ConfigError(
                f"Unknown resampling {resampling!r}; use nearest, bilinear, cubic, average"
            ) from exc
        with rasterio.open(path) as src:
            dst_crs = crs or src.crs
            if dst_crs is None:
                raise ConfigError(f"{path} has no CRS; it cannot be reprojected")
            kw: dict[str, Any] = {}
            if resolution is not None:
                kw["resolution"] = resolution
            transform, width, height = calculate_default_transform(
                src.crs, dst_crs, src.width, src.height, *src.bounds, **kw
            )
            with WarpedVRT(
                src,
                crs=dst_crs,
                transform=transform,
                width=width,
                height=height,
                resampling=rs,
                src_nodata=src.nodata,
                nodata=src.nodata,
            ) as vrt:
                rasterio.shutil.copy(vrt, dst, driver="VRT")
        log.info(
            "Reading %s reprojected to %s at %s resolution (%s resampling) through %s",
            path,
            dst_crs,
            resolution or "native",
            resampling,
            dst,
        )
        return dst


def _resolve_extent(
    grid: Grid, extent: Window | Bounds | str | Path | None, extent_crs: str | None
) -> Window:
    if extent is None:
        return grid.window
    if isinstance(extent, Window):
        win = extent
    elif isinstance(extent, str | Path):
        from rasterlearn.io.vector import read_vector

        gdf = read_vector(extent, crs=grid.crs)
        win = grid.window_for_bounds(tuple(gdf.total_bounds), snap="out")
    else:
        bounds = tuple(float(v) for v in extent)
        if extent_crs is not None and grid.crs is not None:
            from rasterlearn.io.vector import transform_bounds

            bounds = transform_bounds(bounds, extent_crs, grid.crs)  # type: ignore[arg-type]
        win = grid.window_for_bounds(bounds, snap="out")  # type: ignore[arg-type]
    clipped = win.intersection(grid.window)
    if clipped is None:
        from rasterlearn.errors import NoOverlapError

        raise NoOverlapError(f"The extent {extent} does not overlap the raster (bounds {grid.bounds})")
    return clipped


def _keep_slices(
    merge: MergeMode, lay: FeatureLayout, i: int, j: int, nrows: int, ncols: int
) -> tuple[slice, slice]:
    if merge != "center":
        return (slice(0, lay.feat_size), slice(0, lay.feat_size))
    ov = lay.feat_size - lay.feat_stride
    lo = ov // 2

    def axis(k: int, n: int) -> slice:
        start = 0 if k == 0 else lo
        stop = lay.feat_size if k == n - 1 else lo + lay.feat_stride
        return slice(start, stop)

    return (axis(i, nrows), axis(j, ncols))


def _choose_blocksize(
    dim: int, width: int, feat_size: int, budget_mb: float, height: int | None = None
) -> int:
    # no block larger than the grid (a 64 px grid in 512 px blocks wastes GDAL cache on every band)
    top = max(16, -(-max(width, height or width) // 16) * 16)
    for b in (512, 256, 128, 64, 32, 16):
        if b > top and b > 16:
            continue
        if dim * (b + feat_size) * min(width, b) * 4 / 2**20 <= budget_mb:  # wider: column stripes
            return b
    return 16


def _streaming_job(fn: Callable[..., EmbedResult]) -> Callable[..., EmbedResult]:
    """Run ``fn`` with GDAL's block cache bounded by its ``cache_mb`` keyword (GDAL's default, 5 % of RAM,
    keeps every decoded input block: gigabytes on a large raster) and SIGTERM stopping it like Ctrl-C."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> EmbedResult:
        with gdal_cache(int(kwargs.get("cache_mb", 64))), interrupt_on_sigterm():
            return fn(*args, **kwargs)

    return wrapper


@_streaming_job
def embed(
    raster: str | Path,
    model: str,
    *,
    output: str | Path | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    bands: Sequence[int | str] | None = None,
    size: int = 224,
    stride: int | None = None,
    input_size: int | None = None,
    layer: int | None = None,
    normalization: NormMode = "image",
    value_scale: float | None = None,
    merge: MergeMode = "average",
    storage: Storage = "float32",
    min_valid_fraction: float = 0.5,
    extent: Window | Bounds | str | Path | None = None,
    extent_crs: str | None = None,
    target_crs: str | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    device: DeviceName = "auto",
    batch_size: int = 8,
    workers: int = 1,
    pause_s: float = 0.0,
    memory_mb: float = 256.0,
    cache_mb: int = 64,
    cache_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = True,
    backbone: Backbone | None = None,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> EmbedResult:
    """Encode a raster into a feature raster (one band per feature) with a timm backbone.

    Args:
        raster: any GDAL raster, any number of bands and dtype.
        model: timm name, ``hf-hub:`` name or one of :data:`RECOMMENDED_MODELS`.
        output: the final COG (default: ``features.tif`` in the session folder).
        checkpoint: local weights (``.safetensors``/``.pth``) for ``model``; no download then.
        pretrained: download pretrained weights when no checkpoint is given. Without both, the network
            has random weights: a loud warning is logged, and ``seed`` makes it reproducible.
        seed: seed of the random weights (only used without pretrained weights and checkpoint). The
            digest of the weights used is part of the session hash and the output's tags
            (``rasterlearn_weights_sha256``), so a resumed run never mixes two networks.
        model_kwargs: extra ``timm.create_model`` arguments (JSON-able; part of the session hash).
        bands: 1-based indexes or descriptions of the bands to encode (default: all but alpha).
        size: tile size in raster pixels; stride: step between tiles (default ``size``: no overlap).
        input_size: model input size (tiles resized to it; default ``size``).
        layer: ViT block / CNN stage index (default: last).
        normalization: ``image`` (nodata-aware z-score from the raster's sampled statistics), ``model`` (the
            model's mean/std after dividing by ``value_scale``) or ``none``.
        merge: ``average`` (true mean of overlapping tiles), ``first`` or ``center`` (each tile's centre).
        storage: ``float32``, ``float16`` (half-float GeoTIFF) or ``uint16`` (scale/offset per band recorded).
        min_valid_fraction: a feature pixel is nodata when less than this fraction of its input footprint is
            valid (input nodata and outside the raster are invalid).
        extent: a window, bounds (in ``extent_crs`` or the raster CRS) or a vector file whose extent is used.
        target_crs, resolution: read the raster reprojected (GDAL warped VRT) to this CRS / resolution.
        device: ``auto``, ``cpu``, ``cuda``, ``mps``; batch_size: tiles per forward pass.
        workers: reader threads prefetching tile rows; pause_s: sleep between batches (thermal throttling).
        memory_mb: budget for the feature rows and tile rows held in memory (sets the strip height and, on
            wide rasters, the width of the column stripes; ``EmbedResult.peak_buffer_mb`` is what was held).
        cache_mb: GDAL block cache while the job runs (bounded so memory does not grow with the raster).
        cache_dir: where sessions live (default: ``embed_sessions`` beside ``output``, else ``./embed_sessions``).
        resume: continue an interrupted session with the same parameters.
        backbone: an already-built :class:`Backbone` (then ``model`` only names it).
        progress: called with the number of tiles finished, after every tile row of every stripe (also
            when all its tiles were empty); a cancellation raised from it stops the job resumably.
        executor: where tiles are read and encoded (default: this process). A dask executor
            (:func:`rasterlearn.engine.executor.open_executor`) runs them on its workers
            (:mod:`rasterlearn.embed_remote`): the raster and the checkpoint must be readable there. The
            features are the same and the session too: a job interrupted on one executor resumes on another.
        provenance: what the output records about where the raster came from beyond its path (a STAC item's
            id and asset hrefs: :meth:`rasterlearn.io.stac.StacStack.provenance`): tags of the features and
            part of the session hash.

    Tiles without any valid pixel are not encoded (counted in ``tiles_skipped``). Ctrl-C or SIGTERM stop
    the job after the batch in flight; the strips written so far are kept and a rerun resumes from them.

    Returns:
        :class:`EmbedResult` with the output path, session folder and feature grid.
    """
    t_start = time.perf_counter()
    raster = Path(raster)
    if merge not in ("average", "first", "center"):
        raise ConfigError(f"merge must be average, first or center; got {merge!r}")
    if normalization not in ("image", "model", "none"):
        raise ConfigError(f"normalization must be image, model or none; got {normalization!r}")
    if storage not in ("float32", "float16", "uint16"):
        raise ConfigError(f"storage must be float32, float16 or uint16; got {storage!r}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ConfigError(f"min_valid_fraction must be within 0..1, got {min_valid_fraction}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    stride = size if stride is None else stride
    out_path = None if output is None else Path(output)
    check_outputs([raster, checkpoint, extent], [out_path])
    if out_path is not None and not out_path.parent.exists():
        raise OutputError(f"Output folder {out_path.parent} does not exist; create it first")
    cache = (
        Path(cache_dir)
        if cache_dir is not None
        else ((out_path.parent if out_path is not None else Path.cwd()) / "embed_sessions")
    )
    with RasterReader(raster, bands) as probe:
        band_indexes = probe.band_indexes
        in_names = probe.band_names
    remote_build = None
    if backbone is None:
        remote_build = {
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "in_chans": len(band_indexes),
            "input_size": input_size or size,
            "layer": layer,
            "model_kwargs": model_kwargs,
            "seed": seed,
        }
        backbone = load_backbone(
            model,
            checkpoint=checkpoint,
            in_chans=len(band_indexes),
            input_size=input_size or size,
            layer=layer,
            pretrained=pretrained,
            model_kwargs=model_kwargs,
            seed=seed,
        )
    digest = state_digest(backbone)
    random_weights = bool(getattr(backbone, "random_weights", False))
    if random_weights:
        log.warning(
            "RANDOM WEIGHTS: %s has no pretrained weights or checkpoint here; its features come from a "
            "random network (seed %d, weights %s). They are reproducible with the same seed, but carry no "
            "learned meaning; give --checkpoint or pretrained weights for real features.",
            model,
            seed,
            digest,
        )
    params: dict[str, Any] = {
        "format": SESSION_FORMAT,
        "input": _file_identity(raster),
        "bands": band_indexes,
        "model": model,
        "checkpoint": None if checkpoint is None else _file_identity(checkpoint, content_hash=True),
        "pretrained": bool(pretrained and checkpoint is None),
        "model_kwargs": model_kwargs or {},
        "weights_sha256": digest,
        **({"seed": seed} if random_weights else {}),
        "layer": layer,
        "size": size,
        "stride": stride,
        "input_size": input_size,
        "normalization": normalization,
        "value_scale": value_scale,
        "merge": merge,
        "storage": storage,
        "min_valid_fraction": min_valid_fraction,
        "extent": (
            extent.to_tuple()
            if isinstance(extent, Window)
            else (
                _file_identity(extent)
                if isinstance(extent, str | Path)
                else (list(extent) if extent is not None else None)
            )
        ),
        "extent_crs": extent_crs,
        "target_crs": target_crs,
        "resolution": resolution,
        "resampling": resampling if (target_crs or resolution) else None,
        **({"source": dict(provenance)} if provenance else {}),
    }
    sid = session_hash(params)
    session = cache / sid
    session.mkdir(parents=True, exist_ok=True)
    _write_json(session / "parameters.json", {"session": sid, **_canonical(params)})
    final = out_path if out_path is not None else session / "features.tif"
    _update_index(
        cache,
        sid,
        {
            "input": str(raster.resolve()),
            "model": model,
            "output": str(final.resolve()),
            "status": "running",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    record_path = session / "result.json"
    if resume and record_path.exists() and final.exists():
        rec = json.loads(record_path.read_text(encoding="utf-8"))
        if (
            rec.get("session") == sid
            and rec.get("output") == str(final.resolve())
            and rec.get("output_mtime_ns") == final.stat().st_mtime_ns
        ):
            log.info("Session %s is complete and %s is up to date; nothing to do", sid, final)
            _update_index(cache, sid, {"status": "complete"})
            return EmbedResult(
                final,
                session,
                sid,
                Grid.from_dict(rec["grid"]),
                rec["dim"],
                rec["tiles"],
                rec["tiles_skipped"],
                True,
                0.0,
                0.0,
                params,
            )

    source = str(raster)
    if target_crs is not None or resolution is not None:
        source = str(
            _WarpedSource.build(str(raster), session / "source.vrt", target_crs, resolution, resampling)
        )
    executor = executor or LocalExecutor()
    remote = not isinstance(executor, LocalExecutor)
    if remote:  # workers open the raster themselves: an absolute path, and say now when they cannot
        source = str(Path(source).resolve()) if Path(source).exists() else source
        executor.check_readable(source)
    reader = RasterReader(source, band_indexes)
    dev = _pick_device(str(device))
    lay = feature_layout(size, stride, backbone.stride, input_size)
    if backbone.family == "vit" and backbone.fixed_size is not None and backbone.fixed_size != lay.input_size:
        raise ModelError(
            f"{model} was built for {backbone.fixed_size} px inputs, but tiles go in at "
            f"{lay.input_size} px; build it with input_size={lay.input_size}"
        )
    backbone = backbone.to(dev).eval()

    if normalization == "image":
        stats = band_statistics(reader)
        norm = Normalization.from_stats([s.to_dict() for s in stats], "zscore")
        stats_meta: Any = [s.to_dict() for s in stats]
    elif normalization == "model":
        norm, value_scale = _model_normalization(backbone, reader, value_scale)
        stats_meta = None
    else:
        norm, stats_meta = Normalization.identity(reader.count), None

    grid = reader.grid
    area = _resolve_extent(grid, extent, extent_crs)
    plan = plan_tiles(grid, (size, size), (stride, stride), edge="pad", extent=area)
    fgrid_full = grid.subgrid(area).scaled(lay.factor)
    fgrid = fgrid_full
    nrows, ncols = plan.shape
    report_total(progress, nrows * ncols)  # the extent may clip the caller's estimate
    dim = backbone.dim
    blocksize = _choose_blocksize(dim, fgrid.width, lay.feat_size, memory_mb, fgrid.height)
    # wide rasters: column stripes, planned like predict's, so memory does not grow with the width
    narrowest = min(ncols, max(1, blocksize // lay.feat_stride))
    cap = blocksize + lay.feat_size + lay.feat_stride * math.ceil(batch_size / narrowest)
    per_col = feature_bytes_per_column(
        dim,
        cap,
        blocksize,
        lay.factor,
        size,
        len(band_indexes),
        np.dtype(reader.dtype).itemsize,
        max(1, workers) + 2,
    )
    stripe_w, stripes = plan_column_stripes(0, fgrid.width, blocksize, per_col, memory_mb)
    if len(stripes) > 1:
        log.info(
            "Encoding %d column stripes of %d feature pixels (memory_mb=%g)",
            len(stripes),
            stripe_w,
            memory_mb,
        )
    nodata = float("nan")
    tags = {
        "rasterlearn_stage": "embed",
        "rasterlearn_session": sid,
        "rasterlearn_model": model,
        "rasterlearn_checkpoint": "" if checkpoint is None else str(Path(checkpoint).resolve()),
        "rasterlearn_weights_sha256": digest,
        "rasterlearn_random_weights": random_weights,
        "rasterlearn_seed": seed if random_weights else None,
        "rasterlearn_layer": backbone.layer,
        "rasterlearn_family": backbone.family,
        "rasterlearn_tile_size": size,
        "rasterlearn_tile_stride": stride,
        "rasterlearn_input_size": lay.input_size,
        "rasterlearn_effective_stride": lay.factor,
        "rasterlearn_merge": merge,
        "rasterlearn_normalization": {"mode": normalization, "value_scale": value_scale, **norm.to_dict()},
        "rasterlearn_band_statistics": stats_meta,
        "rasterlearn_input": str(raster.resolve()),
        "rasterlearn_input_bands": in_names,
        "rasterlearn_min_valid_fraction": min_valid_fraction,
        "rasterlearn_reprojected": {"crs": target_crs, "resolution": resolution, "resampling": resampling}
        if (target_crs or resolution)
        else None,
        **(dict(provenance) if provenance else {}),
    }
    names = [f"feature_{k:03d}" for k in range(dim)]
    float_path = session / ("features.tif" if storage == "float32" else "features_float32.tif")
    writer = BlockWriter(
        float_path,
        fgrid,
        dim,
        "float32",
        nodata=nodata,
        band_descriptions=names,
        tags=tags,
        blocksize=blocksize,
        overviews=storage == "float32",
        resume=resume,
        # strips (and stripes) are the resume keys: another height or stripe width is another job
        fingerprint=f"{sid}:strip{blocksize}" + (f":stripe{stripe_w}" if len(stripes) > 1 else ""),
    )
    job = StreamJob(
        reader=reader,
        encode=encoder(backbone, lay, dev),
        norm=norm,
        keep=lambda i, j: _keep_slices(merge, lay, i, j, nrows, ncols),
        writer=writer,
        row_offsets=plan.row_offsets,
        col_offsets=plan.col_offsets,
        size=size,
        feat_size=lay.feat_size,
        feat_stride=lay.feat_stride,
        width=fgrid.width,
        height=fgrid.height,
        dim=dim,
        blocksize=blocksize,
        stripes=stripes,
        merge=merge,
        min_valid_fraction=min_valid_fraction,
        batch_size=batch_size,
        workers=workers,
        pause_s=pause_s,
        nodata=nodata,
    )
    ok = False
    try:
        tiles = None
        if remote:
            from rasterlearn.embed_remote import executor_tiles

            tiles = executor_tiles(
                executor, job, sid, model, digest, lay, str(device), source, remote_build, backbone
            )
        streamed = run_stripes(job, progress, tiles)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                writer.abort(keep_partial=True)
            _update_index(
                cache, sid, {"status": "interrupted", "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
            )
        reader.close()
    resumed = streamed.strips_resumed > 0
    if resumed:
        log.info("Resumed session %s: %d feature strips were already written", sid, streamed.strips_resumed)
    tiles_skipped, model_seconds = streamed.tiles_skipped, streamed.model_seconds
    produced = writer.close()
    if storage != "float32":
        try:
            _convert_storage(produced, final, storage)
        except Exception as exc:
            for tmp in final.parent.glob(f".{final.name}.*tmp*"):
                tmp.unlink(missing_ok=True)
            if is_disk_full(exc, final):
                raise disk_full_error(final) from exc
            raise
        produced.unlink()
    elif produced != final:
        if final.exists() and not overwrite:
            raise OutputError(f"{final} exists; pass overwrite=True (CLI: --overwrite)")
        move_file(produced, final)  # across file systems: a temporary copy beside final, then a rename
    seconds = time.perf_counter() - t_start
    result = EmbedResult(
        final,
        session,
        sid,
        fgrid,
        dim,
        nrows * ncols,
        tiles_skipped,
        resumed,
        seconds,
        model_seconds,
        params,
        stripes=len(stripes),
        peak_buffer_mb=streamed.peak_buffer_bytes / 2**20,
    )
    _write_json(
        record_path,
        {
            "session": sid,
            "output": str(final.resolve()),
            "output_mtime_ns": final.stat().st_mtime_ns,
            "grid": fgrid.to_dict(),
            "dim": dim,
            "tiles": nrows * ncols,
            "tiles_skipped": tiles_skipped,
            "seconds": seconds,
            "model_seconds": model_seconds,
            "blocksize": blocksize,
            "stripes": len(stripes),
            "stripe_width": stripe_w,
            "executor": executor.name,  # output-neutral: recorded here, not in the session hash or the tags
        },
    )
    _update_index(cache, sid, {"status": "complete", "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    log.info(
        "Encoded %d tiles (%d empty skipped) into %s: %dx%d feature pixels x %d features in %.1f s",
        nrows * ncols,
        tiles_skipped,
        final,
        fgrid.width,
        fgrid.height,
        dim,
        seconds,
    )
    return result


def _convert_storage(src: Path, dst: Path, storage: Storage) -> None:
    """Second pass over the float32 features: ``uint16`` with per-band scale/offset, or half floats."""
    import rasterio
    import rasterio.shutil

    with RasterReader(src) as rd:
        grid, count = rd.grid, rd.count
        ds = rd.dataset
        tags = ds.tags()
        names = list(ds.descriptions)
        bs = ds.block_shapes[0][0]
        windows = [
            Window(r, c, min(bs, grid.height - r), min(bs, grid.width - c))
            for r in range(0, grid.height, bs)
            for c in range(0, grid.width, bs)
        ]
        if storage == "float16":
            tmp = dst.with_name(f".{dst.name}.f16.tmp.tif")
            rasterio.shutil.copy(
                ds,
                tmp,
                driver="GTiff",
                NBITS=16,
                TILED="YES",
                BLOCKXSIZE=bs,
                BLOCKYSIZE=bs,
                COMPRESS="ZSTD",
                PREDICTOR=1,
                BIGTIFF="IF_SAFER",
                COPY_SRC_OVERVIEWS="NO",
            )
            os.replace(tmp, dst)
            log.info("Stored %s as half floats (GeoTIFF NBITS=16, read back as float32)", dst)
            return
        lo = np.full(count, np.inf)
        hi = np.full(count, -np.inf)
        for w in windows:
            b = rd.read(w)
            if b.valid.any():
                vals = b.data[:, b.valid]
                lo = np.minimum(lo, vals.min(axis=1))
                hi = np.maximum(hi, vals.max(axis=1))
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 1.0)
        scale = np.where(hi > lo, (hi - lo) / 65534.0, 1.0)
        offset = lo - scale  # code 1 = lo; code 0 is nodata
        tags["rasterlearn_storage"] = "uint16: value = code * scale + offset (per band); code 0 = nodata"
        with BlockWriter(
            dst,
            grid,
            count,
            "uint16",
            nodata=0,
            band_descriptions=names,
            tags=tags,
            scales=scale.tolist(),
            offsets=offset.tolist(),
            blocksize=bs,
        ) as out:
            for win in windows:
                b = rd.read(win)
                code = np.rint((b.data - offset[:, None, None]) / scale[:, None, None])
                code = np.clip(np.nan_to_num(code, nan=0), 1, 65535).astype("uint16")
                code[:, ~b.valid] = 0
                out.write(code, win)
    log.info(
        "Stored %s as uint16 with per-band scale/offset (max error %.3g of each band's range)",
        dst,
        0.5 / 65534,
    )


def iter_recommended() -> Iterator[ModelInfo]:
    """The curated models, in order."""
    yield from RECOMMENDED_MODELS.values()
