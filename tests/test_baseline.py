"""The per-pixel random-forest baseline, `compare`, --weights and offline --pretrained (synthetic scene)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterlearn.baseline import pixel_features, run_baseline, side_by_side
from rasterlearn.chips import Scene, make_chips
from rasterlearn.compare import compare, parse_candidates
from rasterlearn.errors import ConfigError, ModelError, OutputError
from rasterlearn.models import create_model, model_spec
from rasterlearn.synthetic import make_synthetic_scene
from rasterlearn.train import TrainConfig, evaluate_model, train

TINY_ENCODER = model_spec("unet").tiny_encoder
TINY = {
    "model_kwargs": model_spec("unet").tiny_kwargs,
    "batch_size": 4,
    "num_workers": 0,
    "sample_chips": 0,
    "epochs": 1,
}


@pytest.fixture(scope="module")
def synth_chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    scene = make_synthetic_scene(d / "scene", size=128, seed=2)
    res = make_chips(
        [Scene(scene.image, scene.labels)],
        d / "chips",
        size=32,
        attribute=scene.attribute,
        schema=scene.schema,
        split_method="blocks",
        block_size=64,
        val=0.25,
        test=0.25,
    )
    return res.out


def test_pixel_features_bands_ndvi_texture() -> None:
    img = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 3.0)]).astype("float32")
    img[1, :, 4:] = 5.0
    feats, names = pixel_features(img, np.ones((8, 8), bool), ["red", "nir"])
    assert names == ["band:red", "band:nir", "ndvi", "texture:mean5", "texture:std5"]
    assert feats.shape == (5, 8, 8) and feats.dtype == np.float32
    assert feats[2, 0, 0] == pytest.approx(0.5) and feats[2, 0, 7] == pytest.approx(4 / 6)
    assert feats[4, 0, 0] == pytest.approx(0.0) and feats[4, 4, 4] > 0  # std at the edge between values
    _, plain = pixel_features(img, np.ones((8, 8), bool), ["b1", "b2"])
    assert "ndvi" not in plain


def test_baseline_on_the_synthetic_scene(synth_chips: Path) -> None:
    res = run_baseline(synth_chips, ("val", "tst"), max_samples=5000, n_estimators=10)
    assert set(res.metrics) == {"val", "tst"}
    for m in res.metrics.values():
        assert m["mean_iou"] is not None and m["mean_iou"] > 0.3
        assert m["pixels"] > 0 and len(m["per_class"]) == len(m["classes"])
    assert 0 < res.samples <= 5000 and res.size_bytes > 1000
    rows = side_by_side({"val": res.metrics["val"]}, res.metrics)
    assert [(r["split"], r["model"]) for r in rows] == [
        ("val", "network"),
        ("val", "baseline (random forest)"),
        ("tst", "baseline (random forest)"),
    ]


def test_train_compares_with_the_baseline(synth_chips: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(arch="unet", encoder=TINY_ENCODER, baseline_samples=3000, **TINY)
    res = train(synth_chips, tmp_path / "m", cfg)
    comp = res.metrics["comparison"]
    assert {r["split"] for r in comp["table"]} == {"val", "tst"} and len(comp["table"]) == 4
    base = json.loads((tmp_path / "m" / "baseline.json").read_text())
    assert base["samples"] <= 3000 and set(base["metrics"]) == {"val", "tst"}
    # one epoch of a tiny network does not beat the forest: said loudly
    lost = [w for w in res.metrics["warnings"] if "does not beat" in w]
    assert bool(lost) == (not comp["network_wins"])
    assert "Network vs per-pixel random forest" in (tmp_path / "m" / "report.html").read_text()
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (
        meta["training"]["baseline"]["random_forest"]["tst"]["mean_iou"] == base["metrics"]["tst"]["mean_iou"]
    )
    m = evaluate_model(tmp_path / "m", synth_chips, split="tst")
    assert m["baseline"]["random_forest"]["mean_iou"] == base["metrics"]["tst"]["mean_iou"]
    # the run report: warnings first, headline with kappa and the lowest class IoU, network vs baseline
    from rasterlearn.run_report import ReportInputs, write_run_report

    page = write_run_report(
        tmp_path / "run", ReportInputs(train_dir=tmp_path / "m", sample_chips=0)
    ).read_text()
    assert "Network vs per-pixel random forest baseline" in page and "lowest class IoU" in page
    assert "loss (chosen)" in page
    if res.metrics["warnings"]:
        assert page.index("Warnings") < page.index("Summary")
    # --no-baseline
    res2 = train(synth_chips, tmp_path / "n", cfg.model_copy(update={"baseline": False}))
    assert "comparison" not in res2.metrics and not (tmp_path / "n" / "baseline.json").exists()


def test_compare_table_and_plot(synth_chips: Path, tmp_path: Path) -> None:
    res = compare(
        synth_chips,
        f"unet:{TINY_ENCODER},rf:bands",
        tmp_path / "cmp",
        train_options=TINY,
        rf_samples=3000,
        rf_trees=10,
    )
    with open(res.files["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["candidate"], r["split"]) for r in rows] == [
        (f"unet:{TINY_ENCODER}", "val"),
        (f"unet:{TINY_ENCODER}", "tst"),
        ("rf:bands", "val"),
        ("rf:bands", "tst"),
    ]
    for r in rows:
        assert 0 <= float(r["mean_iou"]) <= 1 and float(r["seconds"]) > 0 and int(r["model_bytes"]) > 0
        assert "kappa" in r and any(k.startswith("iou_") for k in r)
    assert res.files["plot"].stat().st_size > 1000
    assert json.loads(res.files["json"].read_text())["rows"][2]["candidate"] == "rf:bands"


def test_parse_candidates_errors(tmp_path: Path) -> None:
    c = parse_candidates("unet:resnet18, rf:features")
    assert [(x.kind, x.arch, x.encoder, x.features) for x in c] == [
        ("network", "unet", "resnet18", ""),
        ("rf", "", "", "features"),
    ]
    for bad in ("unet", "rf:pixels", "unet:resnet18,unet:resnet18", ""):
        with pytest.raises(ConfigError):
            parse_candidates(bad)
    with pytest.raises(OutputError):
        compare(tmp_path, "rf:bands", tmp_path / "cmp")


def test_weights_file_changes_predictions(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    donor = create_model("unet", TINY_ENCODER, 4, 3, **model_spec("unet").tiny_kwargs)
    enc = {k: v.clone() + 0.5 for k, v in donor.encoder.state_dict().items() if v.is_floating_point()}
    save_file(enc, str(tmp_path / "encoder.safetensors"))
    torch.save(enc, tmp_path / "encoder.pth")
    x = torch.randn(1, 4, 32, 32)

    def predict(weights: str | None) -> torch.Tensor:
        torch.manual_seed(1)
        m = create_model("unet", TINY_ENCODER, 4, 3, weights=weights, **model_spec("unet").tiny_kwargs)
        with torch.no_grad():
            return m.eval()(x)

    plain = predict(None)
    loaded = predict(str(tmp_path / "encoder.safetensors"))
    assert not torch.allclose(plain, loaded)
    assert torch.allclose(loaded, predict(str(tmp_path / "encoder.pth")))  # weights_only .pth, same values
    m = create_model(
        "unet",
        TINY_ENCODER,
        4,
        3,
        weights=str(tmp_path / "encoder.safetensors"),
        **model_spec("unet").tiny_kwargs,
    )
    assert m.init_info["loaded"] == len(enc)
    for k, v in enc.items():
        assert torch.equal(m.encoder.state_dict()[k], v)


def test_offline_pretrained_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    import segmentation_models_pytorch.encoders as smp_encoders
    from huggingface_hub.errors import LocalEntryNotFoundError

    from rasterlearn.cli import main
    from tests.chipdata import write_chip_dataset

    def offline(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("Cannot reach the Hub and the file is not in the local cache")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    with pytest.raises(ModelError, match=r"hf download smp-hub/resnet18\.imagenet") as info:
        create_model("unet", "resnet18", 4, 2, weights="imagenet")
    assert "\n" not in str(info.value) and "--weights FILE" in str(info.value)
    chips = write_chip_dataset(tmp_path / "c", n_per_split=(1, 1, 0), size=32)
    capsys.readouterr()
    rc = main(
        ["train", str(chips), "--pretrained", "imagenet", "--epochs", "1", "--out", str(tmp_path / "m")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.count("Error:") == 1 and "hf download smp-hub/resnet18.imagenet" in " ".join(err.split())


def test_cli_compare_and_train_options(synth_chips: Path, tmp_path: Path, capsys) -> None:
    import yaml

    from rasterlearn.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model_kwargs": TINY["model_kwargs"], "sample_chips": 0}))
    common = ["--config", str(cfg), "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    rc = main(
        [
            "-q",
            "compare",
            str(synth_chips),
            "--candidates",
            f"unet:{TINY_ENCODER},rf:bands",
            "--out",
            str(tmp_path / "cmp"),
            "--rf-samples",
            "2000",
            *common,
        ]
    )
    assert (
        rc == 0
        and (tmp_path / "cmp" / "compare.csv").exists()
        and (tmp_path / "cmp" / "compare.png").exists()
    )
    rc = main(
        [
            "-q",
            "train",
            str(synth_chips),
            "--arch",
            "unet",
            "--encoder",
            TINY_ENCODER,
            "--out",
            str(tmp_path / "m"),
            "--sampler",
            "balanced",
            "--no-baseline",
            *common,
        ]
    )
    assert rc == 0 and not (tmp_path / "m" / "baseline.json").exists()
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["imbalance"]["sampler"] == "balanced"
    assert meta["training"]["config"]["baseline"] is False
    capsys.readouterr()
    rc = main(["compare", str(synth_chips), "--candidates", "unet", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and "ARCH:ENCODER" in " ".join(err.split()) and "Traceback" not in err


def test_cli_compare_progress_json_counts_the_candidates(synth_chips: Path, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    args = ["compare", str(synth_chips), "--candidates", "rf:bands", "-o", str(tmp_path / "cmp")]
    rc = main([*args, "--rf-samples", "500", "--progress", "json"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    events = [json.loads(ln) for ln in lines]  # stderr holds only JSON lines
    assert rc == 0 and (tmp_path / "cmp" / "compare.csv").exists()
    assert events[0]["event"] == "started" and events[-1]["event"] == "finished"
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 1


def test_compare_rf_features_uses_an_offline_backbone(synth_chips: Path, tmp_path: Path) -> None:
    res = compare(
        synth_chips,
        "rf:features",
        tmp_path / "cmpf",
        rf_samples=2000,
        rf_trees=5,
        feature_model="resnet18",
        feature_layer=1,
        feature_pretrained=False,
    )
    rec = json.loads(res.files["json"].read_text())
    assert (
        rec["features"]["rf:features"]["pretrained"] is False and rec["features"]["rf:features"]["dim"] == 64
    )
    assert [r["split"] for r in res.rows] == ["val", "tst"] and all(r["mean_iou"] > 0 for r in res.rows)


def test_baseline_scores_a_split_with_a_class_absent_from_trn(synth_chips: Path) -> None:
    """The forest predicts class values, not indices into ``classes_``: a class missing from trn (classes_
    shorter than the schema) is scored, not an IndexError."""
    import dataclasses

    from sklearn.ensemble import RandomForestClassifier

    from rasterlearn.baseline import evaluate_baseline, fit_baseline

    model = fit_baseline(synth_chips, max_samples=2000, n_estimators=5)
    nfeat = len(model.feature_names)
    rng = np.random.default_rng(0)
    y = np.array([0, 2] * 40)  # class 1 never seen: classes_ == [0, 2]
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(rng.random((80, nfeat)), y)
    m = evaluate_baseline(dataclasses.replace(model, estimator=rf), synth_chips, "val")
    cm = np.asarray(m["confusion_matrix"])
    assert m["pixels"] > 0 and cm.sum() == m["pixels"]
    assert cm[:, 1].sum() == 0 and cm[:, [0, 2]].sum() == m["pixels"]  # only classes 0 and 2 predicted
