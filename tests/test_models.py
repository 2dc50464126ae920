"""Model registry contract tests: every architecture x bands {1, 4, 13} x classes {1, 2, 7}."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rasterlearn.errors import InputNotFoundError, ModelError
from rasterlearn.labels import ClassSchema
from rasterlearn.models import (
    ModelMetadata,
    adapt_first_layer,
    check_chip_size,
    create_model,
    freeze_encoder,
    list_models,
    load_package,
    model_spec,
    read_state_dict,
    rgb_band_indexes,
    save_package,
    tiny_model,
)
from rasterlearn.normalize import Normalization


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _meta(arch: str, in_ch: int, classes: int, encoder: str, kwargs: dict) -> ModelMetadata:
    schema = ClassSchema.infer(range(max(classes, 2)), background=None)
    return ModelMetadata(
        arch=arch,
        encoder=encoder,
        model_kwargs=kwargs,
        in_channels=in_ch,
        num_classes=classes,
        task="binary" if classes == 1 else "multiclass",
        bands=[f"b{i}" for i in range(in_ch)],
        normalization=Normalization.identity(in_ch).to_dict(),
        schema=schema.to_dict(),
        chip_size=model_spec(arch).min_size,
        gsd=10.0,
        crs_units="metre",
    )


def test_registry_lists_required_architectures():
    names = list_models()
    for required in (
        "unet",
        "unetplusplus",
        "deeplabv3plus",
        "fpn",
        "pspnet",
        "manet",
        "linknet",
        "pan",
        "segformer",
        "upernet",
    ):
        assert required in names
    assert model_spec("UNet++").name == "unetplusplus"
    assert model_spec("DeepLabV3+").name == "deeplabv3plus"
    with pytest.raises(ModelError, match="choose one of"):
        model_spec("nonet")


@pytest.mark.parametrize("classes", [1, 2, 7])
@pytest.mark.parametrize("in_ch", [1, 4, 13])
@pytest.mark.parametrize("arch", list_models())
def test_contract_forward_backward_package_roundtrip(arch, in_ch, classes, tmp_path):
    spec = model_spec(arch)
    torch.manual_seed(0)
    model = tiny_model(arch, in_ch, classes)
    size = spec.min_size
    x = torch.randn(2, in_ch, size, size)
    model.train()
    y = model(x)
    assert y.shape == (2, classes, size, size)
    y.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    save_package(model, _meta(arch, in_ch, classes, spec.tiny_encoder, spec.tiny_kwargs), tmp_path / "pkg")
    pkg = load_package(tmp_path / "pkg")
    assert not pkg.model.training
    with torch.no_grad():
        out = pkg.model(x)
    assert torch.equal(out, ref)
    assert pkg.meta.in_channels == in_ch and pkg.meta.num_classes == classes


def test_package_json_is_plain_and_versions_recorded(tmp_path):
    model = tiny_model("unet", 4, 2)
    save_package(
        model, _meta("unet", 4, 2, "tu-mobilenetv3_small_050", model_spec("unet").tiny_kwargs), tmp_path
    )
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["arch"] == "unet" and meta["bands"] == ["b0", "b1", "b2", "b3"]
    assert "torch" in meta["versions"] and "schema" in meta
    with pytest.raises(InputNotFoundError):
        load_package(tmp_path / "missing")


def test_adapt_first_layer_strategies():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    one, info = adapt_first_layer(w, 1, "repeat")
    assert torch.allclose(one[:, 0], w.sum(1)) and info["in_channels"] == 1
    rep, info = adapt_first_layer(w, 5, "repeat")
    assert torch.allclose(rep[:, :3], w * 3 / 5) and torch.allclose(rep[:, 3], w[:, 0] * 3 / 5)
    assert info["bands_not_in_pretrained_set"] == [3, 4]
    zer, _ = adapt_first_layer(w, 4, "zeros", rgb=(3, 2, 1))
    assert torch.equal(zer[:, 3], w[:, 0]) and torch.equal(zer[:, 1], w[:, 2]) and zer[:, 0].abs().sum() == 0
    mean, _ = adapt_first_layer(w, 4, "mean")
    assert torch.allclose(mean[:, 3], w.mean(1) * 3 / 4)
    rnd, info = adapt_first_layer(w, 4, "random")
    assert rnd.shape == (2, 4, 2, 2) and info["mapping"] == "re-initialised"
    with pytest.raises(ModelError):
        adapt_first_layer(w, 4, "bogus")  # type: ignore[arg-type]


def test_rgb_band_indexes_by_name():
    assert rgb_band_indexes(["B02", "B03", "B04", "B08"], 4) == (2, 1, 0)
    assert rgb_band_indexes(["nir", "red", "green", "blue"], 4) == (1, 2, 3)
    assert rgb_band_indexes(["a", "b", "c", "d"], 4) == (0, 1, 2)
    assert rgb_band_indexes(["a"], 1) is None


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "ckpt"])
def test_local_weights_adapt_first_layer_and_load(tmp_path, fmt, caplog):
    torch.manual_seed(1)
    kw = model_spec("unet").tiny_kwargs
    src = create_model("unet", "tu-mobilenetv3_small_050", 3, 2, **kw)
    state = src.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "pt":  # an encoder-only checkpoint (as a backbone would be distributed)
        path = tmp_path / "w.pt"
        torch.save({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}, path)
    else:  # a Lightning checkpoint of a module holding the model as `self.model`
        path = tmp_path / "w.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    caplog.set_level("INFO", logger="rasterlearn.models")
    m = create_model("unet", "tu-mobilenetv3_small_050", 5, 7, weights=str(path), **kw)
    first = "encoder.model.conv_stem.weight"
    got = m.state_dict()[first]
    assert got.shape[1] == 5
    assert torch.allclose(got[:, :3], state[first] * 3 / 5)
    assert m.init_info["first_layer"]["strategy"] == "repeat"
    assert any("Adapted the pretrained first layer" in r.message for r in caplog.records)
    # a parameter deeper in the encoder is loaded unchanged
    key = next(k for k in state if k.startswith("encoder.") and k != first and state[k].ndim == 4)
    assert torch.equal(m.state_dict()[key], state[key])
    if fmt != "pt":  # head had 2 classes, now 7: skipped, reported
        assert any("segmentation_head" in s for s in m.init_info["skipped"])


def test_weights_from_package_folder_and_bad_files(tmp_path):
    m = tiny_model("fpn", 4, 3)
    save_package(
        m, _meta("fpn", 4, 3, "tu-mobilenetv3_small_050", model_spec("fpn").tiny_kwargs), tmp_path / "p"
    )
    state = read_state_dict(tmp_path / "p")
    assert set(state) == set(m.state_dict())
    m2 = tiny_model("fpn", 4, 3, weights=str(tmp_path / "p"))
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v)
    with pytest.raises(InputNotFoundError):
        read_state_dict(tmp_path / "none.safetensors")
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        read_state_dict(tmp_path / "other.pt")
    torch.save({"x.y": torch.zeros(3)}, tmp_path / "unrelated.pt")
    with pytest.raises(ModelError, match="matches the model"):
        tiny_model("fpn", 4, 3, weights=str(tmp_path / "unrelated.pt"))


def test_errors_and_chip_size_rules():
    with pytest.raises(ModelError, match="timm"):
        create_model("dpt", "resnet18", 3, 2)
    with pytest.raises(ModelError, match="Cannot build"):
        create_model("unet", "no_such_encoder", 3, 2)
    with pytest.raises(ModelError, match="at least 128"):
        check_chip_size("pan", 64)
    with pytest.raises(ModelError, match="multiple of 32"):
        check_chip_size("unet", 48)
    check_chip_size("unet", 256)


def test_freeze_and_unfreeze_encoder():
    m = tiny_model("unet", 3, 2)
    freeze_encoder(m, True)
    assert not any(p.requires_grad for p in m.encoder.parameters())
    assert all(p.requires_grad for p in m.decoder.parameters())
    assert not m.encoder.training
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    freeze_encoder(m, False)
    assert all(p.requires_grad for p in m.encoder.parameters())


def test_pretrained_name_path_adapts(monkeypatch):
    """The download path (encoder_weights name) is exercised with smp's builder patched to stay offline."""
    import segmentation_models_pytorch as smp

    real = smp.create_model
    calls = []

    def fake(arch, encoder_name, encoder_weights, in_channels, classes, **kw):
        calls.append((encoder_weights, in_channels))
        torch.manual_seed(7 if encoder_weights else 0)
        return real(
            arch,
            encoder_name=encoder_name,
            encoder_weights=None,
            in_channels=in_channels,
            classes=classes,
            **kw,
        )

    monkeypatch.setattr(smp, "create_model", fake)
    m = create_model(
        "unet", "tu-mobilenetv3_small_050", 13, 2, weights="imagenet", **model_spec("unet").tiny_kwargs
    )
    assert ("imagenet", 3) in calls and (None, 13) in calls
    assert m.init_info["first_layer"]["in_channels"] == 13
    assert Path  # keep import used
