"""Whole-run configs: validation, the commented template, the stage cache, runs that skip, re-run and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

from rasterlearn.errors import ConfigError, InputNotFoundError, OutputError
from rasterlearn.pipeline import (
    TEMPLATE,
    RunConfig,
    StageCache,
    canonical_hash,
    init_config,
    load_config,
    run_pipeline,
)

# -------------------------------------------------------------------------------------------------
# Config validation
# -------------------------------------------------------------------------------------------------


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_unknown_key_names_key_and_section(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "c.yaml", {"scenes": [{"image": "a.tif"}], "train": {"epochs": 2, "learning_rate": 1}}
    )
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "'learning_rate'" in msg and "section 'train'" in msg and "lr" in msg  # allowed keys listed


@pytest.mark.parametrize(
    ("data", "key", "section"),
    [
        ({"scenes": [{"image": "a.tif"}], "chips": {"size": 64, "strde": 32}}, "strde", "chips"),
        ({"scenes": [{"image": "a.tif", "label": "x.gpkg"}]}, "label", "scenes.0"),
        ({"scenes": [{"image": "a.tif"}], "predict": {"blending": "hann"}}, "blending", "predict"),
        ({"scenes": [{"image": "a.tif"}], "features": {"enable": True}}, "enable", "features"),
        ({"scenes": [{"image": "a.tif"}], "evaluation": {}}, "evaluation", "top level"),
    ],
)
def test_unknown_keys_everywhere(tmp_path: Path, data: dict[str, Any], key: str, section: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown key '{key}' in section '{section}'"):
        load_config(_write(tmp_path / "c.yaml", data))


def test_bad_values_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chips.stride"):
        load_config(_write(tmp_path / "a.yaml", {"scenes": [{"image": "a.tif"}], "chips": {"stride": -1}}))
    with pytest.raises(ConfigError, match=r"predict.blend"):
        load_config(_write(tmp_path / "b.yaml", {"scenes": [{"image": "a.tif"}], "predict": {"blend": "x"}}))
    with pytest.raises(ConfigError, match=r"scenes"):
        load_config(_write(tmp_path / "c.yaml", {"chips": {"size": 64}}))
    (tmp_path / "d.yaml").write_text("scenes: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "d.yaml")
    with pytest.raises(InputNotFoundError, match="rasterlearn init"):
        load_config(tmp_path / "missing.yaml")


def test_split_aliases_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(
        _write(tmp_path / "c.yaml", {"scenes": [{"image": "img/a.tif", "split": "test"}], "out": "runs/x"})
    )
    assert isinstance(cfg.scenes, list) and cfg.scenes[0].split == "tst"
    from rasterlearn.pipeline import out_dir_of

    assert out_dir_of(cfg) == tmp_path / "runs" / "x"


def test_init_writes_a_valid_commented_template(tmp_path: Path) -> None:
    p = init_config(tmp_path / "run.yaml")
    text = p.read_text(encoding="utf-8")
    assert text == TEMPLATE and text.count("#") > 20
    cfg = RunConfig.model_validate(yaml.safe_load(text))
    assert cfg.chips.size == 256 and cfg.train.arch == "unet" and cfg.features.enabled is False
    assert isinstance(cfg.scenes, list) and cfg.scenes[1].split == "tst"
    with pytest.raises(OutputError, match="exists"):
        init_config(p)
    with pytest.raises(Exception, match=r"\.yaml"):
        init_config(tmp_path / "run.txt")


def test_canonical_hash() -> None:
    assert canonical_hash({"a": 1, "b": [1.0, {"c": 2}]}) == canonical_hash({"b": [1, {"c": 2.0}], "a": 1})
    assert canonical_hash({"a": 1}) != canonical_hash({"a": 2})
    assert len(canonical_hash({})) == 16


def test_stage_cache_states(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    assert cache.state("chips", "h1") == "new"
    folder = cache.begin("chips", "h1", {"x": 1})
    (folder / "data.txt").write_text("x")
    assert cache.state("chips", "h1") == "partial"  # running: a crash now resumes
    cache.finish("chips", {"data": str(folder / "data.txt")}, {"n": 1}, 0.5)
    rec = cache.record("chips")
    assert rec is not None and rec.status == "complete" and rec.summary == {"n": 1}
    assert cache.state("chips", "h1") == "complete"
    assert cache.state("chips", "h2") == "stale"
    cache.begin("chips", "h2", {"x": 2})  # parameters changed: the old outputs go
    assert not (folder / "data.txt").exists()
    assert cache.state("chips", "h2") == "partial"
    # a folder we did not write is never deleted
    foreign = tmp_path / "train"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(OutputError, match="not written by a rasterlearn run"):
        cache.begin("train", "h", {})
    assert (foreign / "precious.txt").exists()


# -------------------------------------------------------------------------------------------------
# Runs on a tiny synthetic scene with a tiny model
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rasterlearn.synthetic import make_synthetic_scene

    return make_synthetic_scene(tmp_path_factory.mktemp("scene"), size=96, seed=1)


def tiny_config(scene: Any, out: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "tiny",
        "out": str(out),
        "scenes": [{"image": str(scene.image), "labels": str(scene.labels), "id": "syn"}],
        "classes": {"attribute": "class", "file": str(scene.schema_path)},
        "chips": {"size": 32, "stride": 32, "split_method": "random", "val": 0.2, "test": 0.2, "seed": 0},
        "train": {
            "arch": "unet",
            "encoder": "resnet18",
            "model_kwargs": {"decoder_channels": [16, 16, 8, 8, 8]},
            "epochs": 1,
            "batch_size": 4,
            "num_workers": 0,
            "sample_chips": 1,
            "scheduler": "none",
        },
        "predict": {"overlap": 0.25, "batch_size": 8, "blocksize": 32},
        "report": {"sample_chips": 2, "quicklook_size": 128},
    }
    for section, values in over.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def test_run_skips_reruns_and_reports(scene: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_pipeline(load_config(tiny_config(scene, out), base_dir=tmp_path))
    assert res.ran == ["chips", "train", "predict", "evaluate"] and res.skipped == []
    for stage in res.ran:
        rec = json.loads((out / stage / "stage.json").read_text())
        assert rec["status"] == "complete" and rec["hash"] == res.stages[stage].hash
    # the map: the scene's grid and CRS, class codes of the schema, nodata corner respected
    map_path = Path(res.stages["predict"].outputs["maps"]["syn"])
    with rasterio.open(map_path) as m, rasterio.open(scene.image) as img:
        assert (m.width, m.height, m.crs, m.transform) == (img.width, img.height, img.crs, img.transform)
        classes = m.read(1)
        img_valid = img.read_masks(1) > 0
    assert set(np.unique(classes[img_valid])) <= set(scene.schema.codes)
    assert (classes[~img_valid] == 255).all()
    assert Path(res.stages["predict"].outputs["polygons"]["syn"]).exists()
    # evaluation on the tst chips' footprint only (the scene was used for training)
    ev = res.stages["evaluate"]
    assert ev.outputs["maps"]["syn"]["region"].startswith("tst chips")
    assert 0.0 <= ev.summary["syn_mean_iou"] <= 1.0 and "test_chips" in ev.outputs
    # the report: self-contained, figures embedded and saved as PNG
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and "mean IoU" in html
    pngs = {p.name for p in (out / "report").glob("*.png")}
    assert {"class_balance.png", "training_curves.png", "map_syn.png", "sample_chips.png"} <= pngs
    assert any(p.startswith("confusion_") for p in pngs)
    assert (out / "config.yaml").exists() and json.loads((out / "run.json").read_text())["ran"] == res.ran

    # same config: every stage is skipped, nothing is rewritten
    mtime = map_path.stat().st_mtime_ns
    again = run_pipeline(load_config(tiny_config(scene, out), base_dir=tmp_path))
    assert again.ran == [] and again.skipped == ["chips", "train", "predict", "evaluate"]
    assert map_path.stat().st_mtime_ns == mtime

    # a prediction parameter changes: predict and evaluate re-run, chips and training are kept
    changed = run_pipeline(load_config(tiny_config(scene, out, predict={"overlap": 0.5}), base_dir=tmp_path))
    assert changed.ran == ["predict", "evaluate"] and changed.skipped == ["chips", "train"]
    assert changed.stages["predict"].hash != res.stages["predict"].hash

    # a chips parameter changes: everything after it runs again
    rechip = run_pipeline(load_config(tiny_config(scene, out, chips={"seed": 3}), base_dir=tmp_path))
    assert rechip.ran == ["chips", "train", "predict", "evaluate"]


def test_heldout_scene_is_not_chipped_and_is_evaluated_whole(scene: Any, tmp_path: Path) -> None:
    cfg = tiny_config(scene, tmp_path / "run", chips={"test": 0.0})
    cfg["scenes"].append(
        {"image": str(scene.image), "labels": str(scene.labels), "id": "held", "split": "tst"}
    )
    res = run_pipeline(load_config(cfg, base_dir=tmp_path), stages=["evaluate"])
    dataset = json.loads((Path(res.stages["chips"].outputs["dataset"]) / "dataset.json").read_text())
    assert [s["id"] for s in dataset["scenes"]] == ["syn"]
    assert list(res.stages["predict"].outputs["maps"]) == ["held"]  # auto: the held-out scenes
    assert res.stages["evaluate"].outputs["maps"]["held"]["region"] == "scene (held out)"


def test_run_errors(scene: Any, tmp_path: Path) -> None:
    cfg = tiny_config(scene, tmp_path / "run")
    cfg["scenes"][0]["split"] = "tst"
    with pytest.raises(ConfigError, match="No scene to cut into training chips"):
        run_pipeline(load_config(cfg, base_dir=tmp_path))
    cfg = tiny_config(scene, tmp_path / "run2")
    cfg["scenes"][0]["image"] = "nope.tif"
    with pytest.raises(InputNotFoundError, match=r"scenes\[0\].image"):
        run_pipeline(load_config(cfg, base_dir=tmp_path))
    cfg = tiny_config(scene, tmp_path / "run3", predict={"scenes": ["other"]})
    with pytest.raises(ConfigError, match=r"predict.scenes: unknown scene ids"):
        run_pipeline(load_config(cfg, base_dir=tmp_path))
    assert not (tmp_path / "run3" / "train").exists()  # checked before any stage ran
    cfg = tiny_config(scene, tmp_path / "run4", features={"enabled": True, "scenes": ["x"]})
    with pytest.raises(ConfigError, match=r"features.scenes: unknown scene ids"):
        run_pipeline(load_config(cfg, base_dir=tmp_path))


def test_cli_init_and_run_errors(tmp_path: Path) -> None:
    from rasterlearn.cli import main

    assert main(["init", str(tmp_path / "c.yaml")]) == 0
    assert (tmp_path / "c.yaml").read_text() == TEMPLATE
    assert main(["init", str(tmp_path / "c.yaml")]) == 2  # exists
    _write(tmp_path / "bad.yaml", {"scenes": [{"image": "a.tif"}], "chips": {"sise": 3}})
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2


# -------------------------------------------------------------------------------------------------
# Interrupted runs (SIGKILL) resume
# -------------------------------------------------------------------------------------------------
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from rasterlearn.pipeline import run_pipeline
    stage, after = sys.argv[2], int(sys.argv[3])
    seen = [0]
    def progress(name, n):
        if name == stage:
            seen[0] += 1
            if seen[0] >= after:
                os.kill(os.getpid(), signal.SIGKILL)
    run_pipeline(sys.argv[1], progress=progress)
    """
)


def _run_killed(config: Path, stage: str, after: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(config), stage, str(after)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]


@pytest.mark.slow
def test_killed_during_training_resumes(scene: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _write(tmp_path / "c.yaml", tiny_config(scene, out, train={"epochs": 3}))
    _run_killed(cfg, "train", 2)  # SIGKILL at the end of the second epoch
    rec = json.loads((out / "train" / "stage.json").read_text())
    assert rec["status"] == "running"
    assert (out / "train" / "checkpoints" / "last.ckpt").exists()
    assert not (out / "train" / "model.json").exists()
    assert json.loads((out / "chips" / "stage.json").read_text())["status"] == "complete"

    res = run_pipeline(cfg)
    assert res.skipped == ["chips"] and res.ran == ["train", "predict", "evaluate"]
    tr = res.stages["train"]
    assert tr.status == "complete" and tr.runs == 2  # resumed, not restarted under a new record
    history = (out / "train" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3  # header + 3 epochs: the resumed run did not start from scratch
    assert tr.summary["epochs_trained"] >= 2
    assert (out / "report.html").exists()


@pytest.mark.slow
def test_killed_during_prediction_resumes(scene: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _write(
        tmp_path / "c.yaml", tiny_config(scene, out, predict={"blocksize": 16, "overlap": 0.5, "window": 32})
    )
    _run_killed(cfg, "predict", 3)  # SIGKILL after three window rows (32 px windows: several rows)
    assert json.loads((out / "predict" / "stage.json").read_text())["status"] == "running"
    assert not (out / "predict" / "syn.tif").exists()
    assert list((out / "predict").glob(".syn*partial*"))  # the partial map the next run continues

    res = run_pipeline(cfg)
    assert res.skipped == ["chips", "train"] and res.ran == ["predict", "evaluate"]
    assert res.stages["predict"].runs == 2
    # the resumed map equals an uninterrupted prediction with the same model
    from rasterlearn.predict import predict_package

    ref = tmp_path / "ref.tif"
    predict_package(out / "train", scene.image, ref, overlap=0.5, blocksize=16, batch_size=8, window=32)
    with rasterio.open(out / "predict" / "syn.tif") as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_report_from_a_map_alone(tmp_path: Path) -> None:
    """The report needs only the files that exist: a class map and its image give a legend quick-look."""
    from rasterlearn.run_report import ReportInputs, write_run_report
    from tests.conftest import write_tif

    classes = np.zeros((40, 60), "uint8")
    classes[:, 30:] = 1
    classes[:5, :5] = 255
    write_tif(tmp_path / "map.tif", classes, nodata=255)
    write_tif(tmp_path / "img.tif", np.random.default_rng(0).integers(0, 200, (3, 40, 60)).astype("uint8"))
    dataset = tmp_path / "chips"
    dataset.mkdir()
    schema = {
        "classes": [
            {"code": 0, "name": "background", "color": "#000000"},
            {"code": 1, "name": "roof", "color": "#ff0000"},
        ],
        "ignore_index": 255,
        "background": 0,
    }
    (dataset / "dataset.json").write_text(
        json.dumps({"schema": schema, "splits": {"trn": 2}, "bands": ["r", "g", "b"]})
    )
    (dataset / "manifest.csv").write_text("chip_id,split,px_0,px_1\na,trn,10,30\nb,val,5,5\n")
    page = write_run_report(
        tmp_path / "out",
        ReportInputs(
            title="t", dataset=dataset, maps={"s": tmp_path / "map.tif"}, images={"s": tmp_path / "img.tif"}
        ),
    )
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 2 and "roof" in text and "50.0 %" in text
    assert (tmp_path / "out" / "report" / "map_s.png").exists()
    assert (tmp_path / "out" / "report" / "class_balance.png").exists()
