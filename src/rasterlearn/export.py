"""Export a model package to ONNX (with the metadata the Deepness QGIS plugin reads) or TorchScript.

The exported graph is self-contained: it takes a float tensor ``(N, bands, chip, chip)`` in *input units*,
applies the package's normalization inside the graph and returns class **probabilities** ``(N, C, H, W)``
(softmax; a binary sigmoid model returns two channels, background ``1 - p`` and foreground ``p``).

Input units: ``raw = input * input_scale``. ONNX exports default to ``input_scale = 255``, because Deepness
feeds tiles of the rendered layer divided by 255 (NCHW, values 0-1, the layer's first ``bands`` channels);
TorchScript exports default to ``input_scale = 1`` (raw raster values, as ``rasterlearn predict`` reads them).

ONNX metadata (``metadata_props``, JSON values) follows what Deepness documents and reads: ``model_type``
(``"Segmentor"``), ``class_names`` (output channel -> name), ``resolution`` (cm per pixel, when the training
data were in metres), ``tile_size`` and ``tiles_size`` (Deepness' code and documentation spell it
differently), ``tiles_overlap`` (percent), ``seg_thresh`` (binary models). No ``standardization_mean``/``std``
is written, since normalization is inside the graph. The whole package description is kept under the key
``rasterlearn`` (class codes and colours, bands, normalization, input scale).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rasterlearn._util import atomic_write
from rasterlearn.errors import InputError, OutputError
from rasterlearn.models import ModelMetadata, load_package

__all__ = ["ExportFormat", "ExportResult", "ExportedModel", "deepness_metadata", "export_model"]

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
_SUFFIX_FORMATS: dict[str, ExportFormat] = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}
_METRE_UNITS = {"metre", "meter", "metres", "meters", "m"}


class ExportedModel(nn.Module):
    """A package's network wrapped with its normalization (in front) and softmax/sigmoid (behind)."""

    def __init__(self, model: nn.Module, meta: ModelMetadata, input_scale: float) -> None:
        super().__init__()
        norm = meta.norm
        offset = torch.tensor(norm.offset, dtype=torch.float32).reshape(1, -1, 1, 1)
        inv = torch.tensor([1.0 / s for s in norm.scale], dtype=torch.float64).float().reshape(1, -1, 1, 1)
        self.model = model
        self.binary = meta.task == "binary"
        self.input_scale = float(input_scale)
        self.offset: torch.Tensor
        self.inv_scale: torch.Tensor
        self.register_buffer("offset", offset)
        self.register_buffer("inv_scale", inv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x * self.input_scale if self.input_scale != 1.0 else x
        y = self.model((raw - self.offset) * self.inv_scale)
        if isinstance(y, dict):
            y = y.get("out", next(iter(y.values())))
        elif isinstance(y, list | tuple):
            y = y[0]
        if y.shape[-2:] != x.shape[-2:]:
            y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.binary:
            p = torch.sigmoid(y)
            return torch.cat([1.0 - p, p], dim=1)
        return torch.softmax(y, dim=1)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    format: ExportFormat
    input_shape: tuple[int, int, int, int]
    input_scale: float
    metadata: dict[str, Any]
    max_abs_diff: float | None
    """Largest |probability difference| between the exported model and PyTorch on a random chip (ONNX
    checked with onnxruntime when installed; ``None`` when not checked)."""


def deepness_metadata(meta: ModelMetadata, *, overlap: float, input_scale: float) -> dict[str, Any]:
    """The ONNX ``metadata_props`` (key -> JSON-able value) Deepness reads, plus rasterlearn's own."""
    schema = meta.class_schema
    if meta.task == "binary":
        names = [schema.names[0], schema.names[1]] if len(schema.names) >= 2 else ["background", "foreground"]
        codes = schema.codes[:2]
    else:
        names, codes = list(schema.names), list(schema.codes)
    out: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): n for i, n in enumerate(names)},
        "tile_size": int(meta.chip_size),
        "tiles_size": int(meta.chip_size),
        "tiles_overlap": round(overlap * 100),
    }
    if meta.task == "binary":
        out["seg_thresh"] = float(meta.threshold)
    if meta.gsd and (meta.crs_units or "").lower() in _METRE_UNITS:
        out["resolution"] = round(float(meta.gsd) * 100.0, 6)
    out["rasterlearn"] = {
        "format": meta.format,
        "arch": meta.arch,
        "encoder": meta.encoder,
        "task": meta.task,
        "bands": list(meta.bands),
        "class_codes": [int(c) for c in codes],
        "class_colors": [schema.colormap().get(c) for c in codes],
        "normalization": meta.normalization,
        "input_scale": input_scale,
        "input": "float32 NCHW; raw raster values = input * input_scale; normalization is inside the graph",
        "output": "class probabilities NCHW (channel i = class_names[i] = class_codes[i])",
        "gsd": meta.gsd,
        "crs_units": meta.crs_units,
        "versions": meta.versions,
    }
    return out


def _format_of(output: Path, fmt: ExportFormat | None) -> ExportFormat:
    if fmt is not None:
        if fmt not in ("onnx", "torchscript"):
            raise InputError(f"--format must be onnx or torchscript; got {fmt!r}")
        return fmt
    guessed = _SUFFIX_FORMATS.get(output.suffix.lower())
    if guessed is None:
        raise InputError(
            f"Cannot tell the export format from {output.name!r}: name it .onnx or .pt, or pass --format"
        )
    return guessed


def export_model(
    package: str | Path,
    output: str | Path,
    *,
    format: ExportFormat | None = None,
    input_scale: float | None = None,
    overlap: float = 0.25,
    opset: int = 17,
    check: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export a model package to ONNX or TorchScript.

    Args:
        package: model package folder (``model.json`` + ``model.safetensors``).
        output: file to write (``.onnx`` or ``.pt``; the suffix chooses the format unless ``format`` is given).
        format: ``onnx`` or ``torchscript``.
        input_scale: raw raster value = input x ``input_scale`` (default 255 for ONNX, Deepness' 0-1 input;
            1 for TorchScript).
        overlap: tile overlap fraction recorded for Deepness (``tiles_overlap`` percent).
        opset: ONNX opset version.
        check: run the exported model on a random chip and compare its probabilities with PyTorch's.
        overwrite: replace an existing ``output``.

    Returns:
        An :class:`ExportResult` (path, input shape, metadata, max |Δ| of the check).
    """
    package, output = Path(package), Path(output)
    fmt = _format_of(output, format)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite or choose another name")
    if not output.parent.is_dir():
        raise OutputError(f"The folder of {output} does not exist; create it first")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"--overlap must be in [0, 1); got {overlap}")
    pkg = load_package(package)
    meta = pkg.meta
    scale = float(input_scale if input_scale is not None else (255.0 if fmt == "onnx" else 1.0))
    if scale <= 0:
        raise InputError(f"--input-scale must be > 0; got {scale}")
    if fmt == "onnx" and input_scale is None and meta.input_dtype not in (None, "uint8"):
        log.warning(
            "The model was trained on %s data but Deepness feeds 8-bit renders divided by 255: the export "
            "assumes raw = input x 255; pass --input-scale to change it",
            meta.input_dtype,
        )
    wrapped = ExportedModel(pkg.model, meta, scale).eval()
    shape = (1, meta.in_channels, meta.chip_size, meta.chip_size)
    md = deepness_metadata(meta, overlap=overlap, input_scale=scale)
    gen = torch.Generator().manual_seed(0)
    sample = torch.rand(shape, generator=gen) * (255.0 / scale)
    if fmt == "onnx":
        atomic_write(output, lambda tmp: _write_onnx(wrapped, sample, tmp, md, opset), suffix=".onnx")
    else:
        atomic_write(output, lambda tmp: _write_torchscript(wrapped, sample, tmp, md), suffix=".pt")
    diff = _check(wrapped, output, fmt, sample) if check else None
    if diff is not None:
        log.info("Exported %s: max |probability difference| to PyTorch on a random chip %.2e", output, diff)
    return ExportResult(output, fmt, shape, scale, md, diff)


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch's tracer and deprecation warnings (expected when tracing) become debug log lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("%s: %s", w.category.__name__, w.message)


def _write_onnx(model: nn.Module, sample: torch.Tensor, tmp: Path, md: dict[str, Any], opset: int) -> None:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "ONNX export needs the 'onnx' package: install rasterlearn[onnx] (uv sync --extra onnx)"
        ) from exc
    with torch.no_grad(), _quiet_torch():
        torch.onnx.export(
            model,
            (sample,),
            str(tmp),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    for key, value in md.items():
        prop = proto.metadata_props.add()
        prop.key = key
        prop.value = json.dumps(value)
    proto.producer_name = "rasterlearn"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))


def _write_torchscript(model: nn.Module, sample: torch.Tensor, tmp: Path, md: dict[str, Any]) -> None:
    with torch.no_grad(), _quiet_torch():
        traced = torch.jit.trace(model, (sample,), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"rasterlearn.json": json.dumps(md)})


def _check(model: nn.Module, path: Path, fmt: ExportFormat, sample: torch.Tensor) -> float | None:
    with torch.no_grad():
        ref = model(sample).numpy()
    if fmt == "torchscript":
        with _quiet_torch():
            loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            got = loaded(sample).numpy()
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            log.info("onnxruntime is not installed: the exported ONNX model was not run")
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": sample.numpy()})[0]
    return float(np.max(np.abs(got - ref)))
