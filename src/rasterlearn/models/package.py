"""The self-describing *model package*: a folder holding ``model.safetensors`` (weights, no pickle) and
``model.json`` (:class:`ModelMetadata`); :func:`save_package` writes one, :func:`load_package` rebuilds the
model from these two files alone."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rasterlearn._util import atomic_write, atomic_write_text
from rasterlearn.errors import InputNotFoundError, ModelError
from rasterlearn.labels import ClassSchema
from rasterlearn.models.factory import create_model
from rasterlearn.models.weights import WEIGHTS_FILE
from rasterlearn.normalize import Normalization

PACKAGE_FORMAT = "rasterlearn-model/1"
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
