"""rasterlearn export: ONNX (Deepness metadata, onnxruntime round trip) and TorchScript."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterlearn.cli import main
from rasterlearn.errors import InputError, OutputError
from rasterlearn.export import export_model
from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.models import ModelMetadata, load_package, save_package, tiny_model
from rasterlearn.normalize import Normalization


def _package(tmp_path: Path, *, task: str = "multiclass", classes: int = 3, bands: int = 3) -> Path:
    torch.manual_seed(0)
    out_ch = 1 if task == "binary" else classes
    model = tiny_model("unet", bands, out_ch)
    if task == "binary":
        schema = ClassSchema.binary("building")
    else:
        schema = ClassSchema(
            tuple(
                ClassInfo(c, n, col)
                for c, n, col in zip(
                    (0, 3, 7), ("bg", "water", "forest"), ("#000000", "#0000ff", "#00aa00"), strict=True
                )
            )
        )
    from rasterlearn.models import model_spec

    spec = model_spec("unet")
    meta = ModelMetadata(
        arch="unet",
        encoder=spec.tiny_encoder,
        model_kwargs=dict(spec.tiny_kwargs),
        in_channels=bands,
        num_classes=out_ch,
        task=task,
        bands=[f"b{i}" for i in range(bands)],
        normalization=Normalization(
            "zscore", (110.0, 120.0, 90.0)[:bands], (40.0, 50.0, 30.0)[:bands]
        ).to_dict(),
        schema=schema.to_dict(),
        chip_size=32,
        gsd=0.5,
        crs_units="metre",
        input_dtype="uint8",
        threshold=0.4,
    )
    return save_package(model, meta, tmp_path / f"pkg_{task}")


def _reference(pkg: Path, chip_raw: np.ndarray) -> np.ndarray:
    """rasterlearn's own probabilities for a raw chip (bands, h, w): normalization + model + softmax/sigmoid."""
    p = load_package(pkg)
    x = torch.from_numpy(p.meta.norm.apply(chip_raw)[np.newaxis])
    with torch.no_grad():
        y = p.model(x)
    return (torch.sigmoid(y) if p.meta.task == "binary" else torch.softmax(y, 1)).numpy()


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_onnx_roundtrip_matches_rasterlearn(tmp_path: Path, task: str) -> None:
    import onnxruntime as ort

    pkg = _package(tmp_path, task=task)
    res = export_model(pkg, tmp_path / "m.onnx")
    assert res.format == "onnx" and res.input_shape == (1, 3, 32, 32) and res.input_scale == 255.0
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    rng = np.random.default_rng(1)
    chip = rng.integers(0, 256, (3, 32, 32)).astype("uint8")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    # Deepness' input: the 8-bit tile / 255, NCHW float32
    got = sess.run(None, {"input": (chip.astype("float32") / 255.0)[np.newaxis]})[0]
    ref = _reference(pkg, chip)
    if task == "binary":
        assert got.shape == (1, 2, 32, 32)
        assert np.abs(got[:, 1:] - ref).max() < 1e-4
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    else:
        assert got.shape == (1, 3, 32, 32)
        assert np.abs(got - ref).max() < 1e-4
    # dynamic batch
    two = sess.run(None, {"input": np.repeat((chip.astype("float32") / 255.0)[np.newaxis], 2, axis=0)})[0]
    assert two.shape[0] == 2
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["model_type"]) == "Segmentor"
    names = json.loads(meta["class_names"])
    assert names == (
        {"0": "background", "1": "building"} if task == "binary" else {"0": "bg", "1": "water", "2": "forest"}
    )
    assert json.loads(meta["resolution"]) == 50.0  # cm per pixel
    assert json.loads(meta["tile_size"]) == 32 and json.loads(meta["tiles_size"]) == 32
    assert json.loads(meta["tiles_overlap"]) == 25
    assert "standardization_mean" not in meta  # normalization is inside the graph
    own = json.loads(meta["rasterlearn"])
    assert own["class_codes"] == ([0, 1] if task == "binary" else [0, 3, 7])
    if task == "binary":
        assert json.loads(meta["seg_thresh"]) == pytest.approx(0.4)


def test_torchscript_export_cli(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    out = tmp_path / "m.pt"
    assert main(["export", str(pkg), "-o", str(out), "--format", "torchscript"]) == 0
    extra = {"rasterlearn.json": ""}
    with pytest.warns(FutureWarning):  # torch deprecates TorchScript, still loads it
        loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["rasterlearn.json"])["rasterlearn"]["input_scale"] == 1.0
    chip = np.random.default_rng(2).integers(0, 256, (3, 32, 32)).astype("float32")
    with torch.no_grad():
        got = loaded(torch.from_numpy(chip[np.newaxis])).numpy()
    assert np.abs(got - _reference(pkg, chip)).max() < 1e-4
    # refuses to overwrite; an unknown suffix needs --format
    assert main(["export", str(pkg), "-o", str(out), "--format", "torchscript"]) == 2
    with pytest.raises(OutputError, match="exists"):
        export_model(pkg, out)
    with pytest.raises(InputError, match="--format"):
        export_model(pkg, tmp_path / "m.bin")


def test_onnx_export_cli(tmp_path: Path) -> None:
    """The contract's command: ``rasterlearn export MODEL -o model.onnx`` (format from the suffix)."""
    import onnx

    pkg = _package(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", str(pkg), "-o", str(out)]) == 0
    model = onnx.load(str(out))
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["model_type"] == "Segmentor" and meta["class_names"] == {
        "0": "bg",
        "1": "water",
        "2": "forest",
    }
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]
