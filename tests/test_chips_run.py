"""The chips stage function: ``run_chips(ChipsOptions(...))`` = the CLI = ``make_chips``, the CLI's model from
options and from ``--config``, the dataset fingerprint from the options model, the run YAML's mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import yaml
from shapely.geometry import box

from rasterlearn.chips import ChipSettings, Scene, make_chips, run_chips
from rasterlearn.chips.options import RECORD_NAMES, RESOLVED_FIELDS
from rasterlearn.cli import main
from rasterlearn.engine.events import Monitor
from rasterlearn.engine.journal import fingerprint
from rasterlearn.errors import ConfigError
from rasterlearn.options import ChipsOptions
from tests.conftest import write_tif
from tests.test_journal import _other_value

X0, Y0 = 500_000.0, 4_000_000.0


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    img = rng.integers(1, 250, (3, 40, 56)).astype("uint8")
    img[:, 32:, 48:] = 0  # a nodata corner
    raster = write_tif(tmp_path / "in" / "scene.tif", img, nodata=0)
    polys = [box(X0 + 20, Y0 - 200, X0 + 230, Y0 - 30), box(X0 + 300, Y0 - 390, X0 + 520, Y0 - 180)]
    labels = tmp_path / "in" / "labels.gpkg"
    gpd.GeoDataFrame({"cls": ["roof", "road"]}, geometry=polys, crs="EPSG:32633").to_file(labels)
    return {"raster": raster, "labels": labels}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


OPTS = {
    "size": 16,
    "stride": 8,
    "bands": "3,1",
    "split_method": "random",
    "val": 0.25,
    "test": 0.0,
    "seed": 4,
}


def test_run_chips_writes_the_bytes_of_the_cli_and_of_make_chips(inputs, tmp_path) -> None:
    raster, labels = inputs["raster"], inputs["labels"]
    api = run_chips(
        ChipsOptions(raster=[raster], labels=[labels], attribute="cls", output=tmp_path / "api", **OPTS)
    )
    argv = ["-q", "chips", "-r", str(raster), "-l", str(labels), "-a", "cls", "-o", str(tmp_path / "cli")]
    argv += ["--size", "16", "--stride", "8", "-b", "3,1", "--split-method", "random", "--val", "0.25"]
    assert main([*argv, "--test", "0", "--seed", "4", "--progress", "none"]) == 0
    kw = {**OPTS, "bands": ["3", "1"]}
    lib = make_chips([Scene(raster, labels)], tmp_path / "lib", attribute="cls", **kw)
    assert api.out == tmp_path / "api" and api.written == len(api.manifest) > 4
    assert set(api.splits) == {"trn", "val", "tst"} and api.splits["val"] > 0
    files = _files(api.out)
    assert {"dataset.json", "manifest.csv", "candidates.csv"} <= set(files)
    assert files == _files(tmp_path / "cli") == _files(lib.out)  # every byte, chips and tables
    ds = json.loads(files["dataset.json"])
    assert ds["band_indexes"] == [3, 1] and ds["stride"] == 8 and ds["params"]["unknown"] == "error"


def test_progress_counts_both_phases_and_phases_get_one_callback_each(inputs, tmp_path) -> None:
    base = {"raster": [inputs["raster"]], "labels": [inputs["labels"]], "attribute": "cls", "size": 16}
    counted: list[int] = []
    res = run_chips(ChipsOptions(**base, output=tmp_path / "a"), progress=counted.append)
    assert sum(counted) == 3 * 4 + res.written  # 40 x 56 px in 16 px chips: 3 x 4 windows, then the chips

    events: list[Any] = []
    monitor = Monitor("chips", events.append, min_interval=0.0)
    both: list[int] = []
    again = run_chips(ChipsOptions(**base, output=tmp_path / "b"), phases=monitor.phase, progress=both.append)
    assert sum(both) == 3 * 4 + again.written  # still counted when phases are given too
    assert [(p.name, p.total, p.done) for p in monitor.phases] == [
        ("scanning windows", 12, 12),
        ("writing chips", again.written, again.written),
    ]
    assert [e.phase for e in events if type(e).__name__ == "Phase"] == ["scanning windows", "writing chips"]


def test_run_chips_refuses_missing_or_doubled_inputs(inputs, tmp_path) -> None:
    raster, labels = inputs["raster"], inputs["labels"]
    with pytest.raises(ConfigError, match=r"rasterlearn chips: output not given.*'output:'"):
        run_chips(ChipsOptions(raster=[raster], labels=[labels]))
    with pytest.raises(ConfigError, match="No input"):
        run_chips(ChipsOptions(output=tmp_path / "o"))
    with pytest.raises(ConfigError, match="given twice"):
        run_chips(
            ChipsOptions(raster=[raster], labels=[labels], output=tmp_path / "o"),
            scenes=[Scene(raster, labels)],
        )
    with pytest.raises(ConfigError, match="stride \\(32\\) is larger"):
        run_chips(ChipsOptions(raster=[raster], labels=[labels], output=tmp_path / "o", size=16, stride=32))
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_cli_options_and_config_file_give_the_same_model(inputs, tmp_path, monkeypatch) -> None:
    import rasterlearn.chips
    import rasterlearn.cli.chips as cli_chips

    seen: list[ChipsOptions] = []
    monkeypatch.setattr(rasterlearn.chips, "run_chips", lambda options, **kw: seen.append(options))
    monkeypatch.setattr(cli_chips, "_print_summary", lambda result: None)
    raster, labels = str(inputs["raster"]), str(inputs["labels"])
    argv = ["chips", "-r", raster, "-l", labels, "-a", "cls", "-o", str(tmp_path / "d"), "--size", "32"]
    argv += ["--stride", "16", "-b", "3,1", "--priority", "2,1", "--overlap", "priority"]
    argv += ["--class-proportion", "1:5", "--unknown-classes", "ignore", "--val", "0.2", "--all-touched"]
    assert main([*argv, "--progress", "none"]) == 0
    cfg = {
        "raster": [raster],
        "labels": labels,  # one file where a list is expected
        "attribute": "cls",
        "output": str(tmp_path / "d"),
        "size": 32,
        "stride": 16,
        "bands": [3, 1],
        "priority": [2, 1],
        "overlap": "priority",
        "class_proportion": {1: 5},
        "unknown_classes": "ignore",
        "val": 0.2,
        "all_touched": True,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["chips", "--config", str(tmp_path / "c.yaml"), "--progress", "none"]) == 0
    assert len(seen) == 2
    assert seen[0].model_dump() == seen[1].model_dump()
    assert seen[0].bands == ["3", "1"] and seen[0].priority == [2, 1] and seen[0].labels == [Path(labels)]
    assert ChipSettings.resolve(seen[0]).bands == [3, 1]  # "3" is band 3, as in a YAML list


def _record_hash(options: ChipsOptions) -> str:
    return fingerprint(ChipSettings.resolve(options).record(options))


def test_fingerprint_follows_every_recorded_option_and_no_neutral_one(tmp_path) -> None:
    areas = tmp_path / "areas.gpkg"
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 100, X0 + 100, Y0)], crs="EPSG:32633").to_file(areas)
    base = _record_hash(ChipsOptions())
    changed, kept = [], []
    for name in ChipsOptions.model_fields:
        special = {"label_areas": str(areas), "class_proportion": {1: 5}, "stride": 128, "block_size": 128}
        value = special[name] if name in special else _other_value(ChipsOptions, name)
        (changed if _record_hash(ChipsOptions.model_validate({name: value})) != base else kept).append(name)
    neutral = ChipsOptions.neutral_fields()
    assert sorted(kept) == sorted(neutral | RESOLVED_FIELDS)  # inputs: recorded as resolved identities
    assert set(changed) == set(ChipsOptions.model_fields) - neutral - RESOLVED_FIELDS
    # a recorded key per fingerprinted field (the record keeps its former names)
    record = ChipSettings.resolve(ChipsOptions()).record(ChipsOptions())
    assert set(record) == {RECORD_NAMES.get(n, n) for n in changed}


def test_a_neutral_option_resumes_and_an_output_option_writes_elsewhere(inputs, tmp_path, caplog) -> None:
    base = {"raster": [inputs["raster"]], "labels": [inputs["labels"]], "attribute": "cls", "size": 16}
    out = tmp_path / "ds"
    first = run_chips(ChipsOptions(**base, output=out))
    again = run_chips(ChipsOptions(**base, output=out, cache_mb=8))  # neutral: the same dataset
    assert again.out == out and again.skipped == first.written and again.written == 0
    assert again.dataset["params_hash"] == first.dataset["params_hash"]
    other = run_chips(ChipsOptions(**base, output=out, min_annotated=5.0))
    assert other.out != out and other.dataset["params_hash"] != first.dataset["params_hash"]
    assert other.dataset["params"]["min_annotated"] == 5.0


def test_run_yaml_chips_section_maps_to_the_options_in_one_place(inputs, tmp_path) -> None:
    from rasterlearn.pipeline.config import load_config
    from rasterlearn.pipeline.stages import _Stages

    (tmp_path / "in" / "areas.gpkg").write_bytes(b"")  # resolved beside the run YAML, read later
    cfg = {
        "name": "r",
        "out": str(tmp_path / "run"),
        "scenes": [{"image": str(inputs["raster"]), "labels": str(inputs["labels"]), "id": "s"}],
        "classes": {"attribute": "cls", "burn_value": 3, "ignore_index": 250},
        "chips": {"size": 16, "unknown": "ignore", "label_areas": "areas.gpkg", "class_proportion": {1: 2}},
    }
    stages = _Stages(load_config(cfg, base_dir=tmp_path / "in"), tmp_path / "run", None, [])
    opts = stages.chips_options(tmp_path / "run" / "chips" / "dataset")
    assert opts.unknown_classes == "ignore" and opts.size == 16 and opts.class_proportion == {1: 2.0}
    assert opts.attribute == "cls" and opts.burn_value == 3 and opts.ignore_index == 250
    assert opts.label_areas == str(tmp_path / "in" / "areas.gpkg") and opts.schema_file is None
    assert opts.output == tmp_path / "run" / "chips" / "dataset" and not opts.raster
