"""The evaluate and vectorize stage functions: ``run_evaluate(EvaluateOptions)`` / ``run_vectorize(VectorizeOptions)``.

They are what the CLI commands, ``--config`` files and the run YAML call: the same bytes as the command, the
same options model from flags and from a file, and a resume fingerprint taken from the options model (less
its output-neutral fields) plus the values resolved from it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import yaml
from affine import Affine
from shapely.geometry import box

from rasterlearn.cli import main
from rasterlearn.errors import InputError
from rasterlearn.evaluate import EvaluateResult, evaluate_map, run_evaluate
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array
from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.options import EvaluateOptions, VectorizeOptions
from rasterlearn.vectorize import VectorizeResult, run_vectorize, vectorize_fingerprint, vectorize_raster

T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
GRID = Grid(30, 40, T, "EPSG:32633")
SCHEMA = ClassSchema(
    (
        ClassInfo(0, "background", "#000000"),
        ClassInfo(1, "building", "#ff0000"),
        ClassInfo(2, "road", "#808080"),
    ),
    255,
    0,
)


def _pix_box(r0: int, c0: int, r1: int, c1: int) -> Any:
    return box(500_000 + 10 * c0, 4_000_000 - 10 * r1, 500_000 + 10 * c1, 4_000_000 - 10 * r0)


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A 30x40 class map naming its classes (predict's ``classes`` tag) and vector truth of class names."""
    m = np.zeros((30, 40), dtype="uint8")
    m[5:15, 5:20] = 1
    m[20:25, 30:38] = 1
    m[25:30, :] = 2
    m[0:2, :] = 255
    path = write_array(
        tmp_path / "map.tif",
        m[None],
        GRID,
        nodata=255,
        category_names=SCHEMA.category_names(),
        colormap=SCHEMA.colormap(),
        tags={"classes": json.dumps(SCHEMA.to_dict())},
    )
    truth = gpd.GeoDataFrame(
        {"kind": ["building", "road", "building"]},
        geometry=[_pix_box(5, 10, 15, 20), _pix_box(24, 0, 30, 40), _pix_box(2, 30, 6, 36)],
        crs="EPSG:32633",
    )
    truth.to_file(tmp_path / "truth.gpkg")
    return {"map": path, "truth": tmp_path / "truth.gpkg"}


# -- (a) the stage function writes what the command and the kernel write -------------------------------------
def test_run_evaluate_writes_the_bytes_of_the_cli_and_of_evaluate_map(scene, tmp_path) -> None:
    opts = {"attribute": "kind", "ignore": "9", "aoi": "500000,3999700,500400,4000000"}
    res = run_evaluate(
        EvaluateOptions(map=scene["map"], truth=scene["truth"], output=tmp_path / "api" / "m.json", **opts)
    )
    assert isinstance(res, EvaluateResult) and res.output == tmp_path / "api" / "m.json"
    assert res.csv == tmp_path / "api" / "m.csv" and res.png == tmp_path / "api" / "m.png"
    cm = np.array(res.metrics["confusion_matrix"])
    assert cm.sum() == 28 * 40 - 0 and cm[1, 1] == 100 and cm[2, 2] == 5 * 40
    args = [
        "-q",
        "evaluate",
        str(scene["map"]),
        "--truth",
        str(scene["truth"]),
        "-o",
        str(tmp_path / "cli" / "m.json"),
    ]
    assert main([*args, "--attribute", "kind", "--ignore", "9", "--aoi", opts["aoi"]]) == 0
    kernel = evaluate_map(
        scene["map"],
        scene["truth"],
        attribute="kind",
        ignore_values=[9],
        aoi=(500000.0, 3999700.0, 500400.0, 4000000.0),  # as the text is parsed
        output=tmp_path / "kernel" / "m.json",
    )
    for name in ("m.json", "m.csv", "m.png"):
        api = (tmp_path / "api" / name).read_bytes()
        assert api == (tmp_path / "cli" / name).read_bytes() == (tmp_path / "kernel" / name).read_bytes(), (
            name
        )
    assert kernel == json.loads((tmp_path / "api" / "m.json").read_text())


def test_run_vectorize_writes_the_bytes_of_the_cli_and_styles_a_geopackage(scene, tmp_path) -> None:
    api, cli = tmp_path / "api" / "p.geojson", tmp_path / "cli" / "p.geojson"  # GeoJSON records its name
    api.parent.mkdir()
    cli.parent.mkdir()
    opts = VectorizeOptions(
        raster=scene["map"], output=api, exclude="0", min_area=2, area_unit="pixels", window_size=16
    )
    res = run_vectorize(opts)
    assert isinstance(res, VectorizeResult) and res.output == api and res.count == 3
    assert sorted(res.polygons["class_name"]) == ["building", "building", "road"]
    args = ["-q", "vectorize", str(scene["map"]), "-o", str(cli), "--exclude", "0", "--min-area", "2"]
    assert main([*args, "--area-unit", "pixels", "--window-size", "16"]) == 0
    assert api.read_bytes() == cli.read_bytes()
    kernel = vectorize_raster(scene["map"], exclude=[0], min_area=2, area_unit="pixels", window_size=16)
    assert kernel["pixels"].tolist() == res.polygons["pixels"].tolist() == [150, 40, 200]
    gpkg = run_vectorize(opts.model_copy(update={"output": tmp_path / "p.gpkg"}))
    with sqlite3.connect(gpkg.output) as con:
        (qml,) = con.execute("SELECT styleQML FROM layer_styles WHERE useAsDefault = 1").fetchone()
    assert "building" in qml and "road" in qml and "background" not in qml  # the classes present
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        run_vectorize(opts)
    assert run_vectorize(opts.model_copy(update={"overwrite": True})).count == 3


def test_stage_functions_refuse_bad_option_texts_in_one_line(scene, tmp_path) -> None:
    base = EvaluateOptions(map=scene["map"], truth=scene["truth"], output=tmp_path / "m.json")
    with pytest.raises(InputError, match="ignore: 'x,1' is not a comma list of numbers"):
        run_evaluate(base.model_copy(update={"ignore": "x,1"}))
    with pytest.raises(InputError, match="either --truth-classes FILE or --truth-names TEXT"):
        run_evaluate(base.model_copy(update={"truth_names": "1=a", "truth_classes": tmp_path / "c.yaml"}))
    with pytest.raises(InputError, match=r"rasterlearn evaluate: truth not given.*'truth:'"):
        run_evaluate(EvaluateOptions(map=scene["map"]))
    with pytest.raises(InputError, match="exclude: '0,b' is not a comma list of class codes"):
        run_vectorize(VectorizeOptions(raster=scene["map"], output=tmp_path / "p.geojson", exclude="0,b"))
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "p.geojson").exists()


def test_progress_is_told_the_map_total_first_then_the_aoi_total(scene, tmp_path) -> None:
    from rasterlearn.engine.events import Monitor

    events: list[Any] = []
    phase = Monitor("evaluate", events.append, min_interval=0).phase("evaluate", None, "px")
    aoi = "500000,3999800,500400,4000000"  # the top 20 of the map's 30 rows
    run_evaluate(
        EvaluateOptions(map=scene["map"], truth=scene["truth"], attribute="kind", aoi=aoi), progress=phase
    )
    totals = [e.total for e in events if type(e).__name__ == "Progress"]
    assert totals[0] == 30 * 40 and totals[-1] == 20 * 40 and phase.done == 20 * 40
    events.clear()
    phase = Monitor("vectorize", events.append, min_interval=0).phase("vectorize", None, "px")
    run_vectorize(
        VectorizeOptions(raster=scene["map"], output=tmp_path / "p.geojson", window_size=16), progress=phase
    )
    assert phase.total == phase.done == 30 * 40


# -- (b) flags and --config give the stage function the same model ------------------------------------------
def _capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Replace the stage function by one that records the options it is given and stops (exit code 2)."""
    seen: list[Any] = []

    def spy(options: Any, *, progress: Any = None) -> Any:
        seen.append(options)
        raise InputError("captured")

    monkeypatch.setattr(module, name, spy)
    return seen


def test_cli_flags_and_config_file_hand_run_evaluate_the_same_options(scene, tmp_path, monkeypatch) -> None:
    import rasterlearn.evaluate as evaluate_pkg

    seen = _capture(monkeypatch, evaluate_pkg, "run_evaluate")
    out = tmp_path / "m.json"
    flags = [
        "--truth",
        str(scene["truth"]),
        "--attribute",
        "kind",
        "--ignore",
        "9,10",
        "--class-match",
        "name",
    ]
    flags += ["--truth-names", "1=building,2=road", "--unlabelled", "ignore", "--all-touched", "-o", str(out)]
    assert main(["-q", "evaluate", str(scene["map"]), *flags, "--aoi", "1,2,3,4"]) == 2
    cfg = tmp_path / "evaluate.yaml"
    data = {"map": str(scene["map"]), "truth": str(scene["truth"]), "attribute": "kind", "ignore": [9, 10]}
    data |= {"class_match": "name", "truth_names": {1: "building", 2: "road"}, "unlabelled": "ignore"}
    cfg.write_text(yaml.safe_dump(data | {"all_touched": True, "output": str(out), "aoi": [1, 2, 3, 4]}))
    assert main(["-q", "evaluate", "--config", str(cfg)]) == 2
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0].truth_names == "1=building,2=road" and seen[0].ignore == "9,10" and seen[0].all_touched
    assert seen[0].aoi == "1,2,3,4" and seen[0].map == scene["map"] and seen[0].output == out


def test_cli_flags_and_config_file_hand_run_vectorize_the_same_options(scene, tmp_path, monkeypatch) -> None:
    import rasterlearn.vectorize as vectorize_mod

    seen = _capture(monkeypatch, vectorize_mod, "run_vectorize")
    out = tmp_path / "p.geojson"
    flags = [
        "-o",
        str(out),
        "--exclude",
        "0,2",
        "--min-area",
        "2",
        "--simplify",
        "0.5",
        "--window-size",
        "16",
    ]
    assert main(["-q", "vectorize", str(scene["map"]), *flags, "--area-unit", "pixels"]) == 2
    cfg = tmp_path / "v.yaml"
    data = {
        "raster": str(scene["map"]),
        "output": str(out),
        "exclude": [0, 2],
        "min_area": 2,
        "simplify": 0.5,
    }
    cfg.write_text(yaml.safe_dump(data | {"window_size": 16, "area_unit": "pixels", "overwrite": True}))
    assert main(["-q", "vectorize", "--config", str(cfg), "--no-overwrite"]) == 2
    assert main(["-q", "vectorize", "--config", str(cfg)]) == 2
    assert len(seen) == 3 and seen[0] == seen[1] and seen[1].model_copy(update={"overwrite": True}) == seen[2]
    assert seen[1].exclude == "0,2" and seen[1].window_size == 16 and seen[1].simplify == 0.5


# -- (c) the resume fingerprint: the options model less its neutral fields, plus resolved values ------------
# a changed value for every field of the options models (a new field fails here until it is given one)
EVALUATE_CHANGES: dict[str, Any] = {
    "map": "other.tif",
    "truth": "other.gpkg",
    "output": "other.json",
    "attribute": "code",
    "layer": "truth",
    "schema": "classes.yaml",
    "truth_classes": "names.yaml",
    "truth_names": "1=building",
    "class_match": "code",
    "unlabelled": "background",
    "aoi": "0,0,1,1",
    "ignore": "7",
    "all_touched": True,
    "scheduler": "tcp://127.0.0.1:8786",
    "workers": 2,
}
VECTORIZE_CHANGES: dict[str, Any] = {
    "raster": "other.tif",
    "output": "other.gpkg",
    "min_area": 5.0,
    "area_unit": "pixels",
    "simplify": 1.0,
    "exclude": "3",
    "window_size": 64,
    "overwrite": True,
}


def _field_keys(model: type[Any]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_evaluate_fingerprint_follows_every_option_but_the_neutral_ones(scene, tmp_path, monkeypatch) -> None:
    import dataclasses

    import rasterlearn.evaluate.run as run_mod
    from rasterlearn.grid import Window

    assert set(EVALUATE_CHANGES) == _field_keys(EvaluateOptions)
    calls: list[tuple[Any, ...]] = []
    real = run_mod.evaluation_fingerprint

    def spy(*args: Any) -> str:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(run_mod, "evaluation_fingerprint", spy)
    options = EvaluateOptions(
        map=scene["map"], truth=scene["truth"], attribute="kind", output=tmp_path / "m.json"
    )
    run_evaluate(options)
    (args,) = calls
    # the stage's options make the fingerprint (evaluate_map rebuilds them from the keywords run_evaluate passes)
    assert args[0].model_dump(mode="json") == options.model_dump(mode="json")
    key = real(*args)
    for field, value in EVALUATE_CHANGES.items():
        changed = EvaluateOptions.model_validate({**options.model_dump(by_alias=True), field: value})
        assert (real(changed, *args[1:]) == key) == (field in EvaluateOptions.neutral_fields()), field
    # resolved values count too: the map's classes, the AOI's extent, the window size
    m, extent, window_size, aoi = args[1:]
    renamed = ClassSchema(tuple(dataclasses.replace(c, name=c.name.upper()) for c in SCHEMA.classes), 255, 0)
    assert real(options, dataclasses.replace(m, schema=renamed), extent, window_size, aoi) != key
    assert real(options, m, Window(0, 0, 10, 40), window_size, aoi) != key
    assert real(options, m, extent, 512, aoi) != key


def test_vectorize_fingerprint_follows_every_option_but_the_neutral_ones(tmp_path) -> None:
    assert set(VECTORIZE_CHANGES) == _field_keys(VectorizeOptions)
    raster = write_array(tmp_path / "m.tif", np.zeros((1, 4, 4), dtype="uint8"), Grid(4, 4, T, "EPSG:32633"))
    options = VectorizeOptions(raster=raster, output=tmp_path / "p.gpkg")
    resolved = {"band": 1, "exclude": [], "window_size": 2048, "names": {}}
    key = vectorize_fingerprint(options, resolved, raster)
    for field, value in VECTORIZE_CHANGES.items():
        changed = VectorizeOptions.model_validate({**options.model_dump(), field: value})
        assert (vectorize_fingerprint(changed, resolved, raster) == key) == (
            field in options.neutral_fields()
        ), field
    assert vectorize_fingerprint(options, resolved | {"names": {1: "a"}}, raster) != key


def test_a_changed_option_restarts_an_interrupted_vectorize_and_a_neutral_one_resumes(
    scene, tmp_path
) -> None:
    from rasterlearn.errors import JobCancelledError

    out = tmp_path / "p.geojson"
    record = out.with_name(f".{out.name}.progress.json")
    options = VectorizeOptions(raster=scene["map"], output=out, window_size=16)

    def stop(n: int) -> None:
        raise JobCancelledError("stop")

    def interrupted(opts: VectorizeOptions) -> dict[str, Any]:
        with pytest.raises(JobCancelledError):
            run_vectorize(opts, progress=stop)
        return json.loads(record.read_text())

    first = interrupted(options)
    assert first["done"] == ["0:0"]  # the first window, recorded before progress was told
    assert interrupted(options.model_copy(update={"overwrite": True}))["fingerprint"] == first["fingerprint"]
    assert interrupted(options.model_copy(update={"min_area": 5.0}))["fingerprint"] != first["fingerprint"]
    seen: list[int] = []
    assert run_vectorize(options, progress=seen.append).count == 4
    assert not record.exists() and sum(seen) == 30 * 40


# -- the run YAML's evaluate stage: the same metrics through run_evaluate -------------------------------------
def test_pipeline_form_of_the_options_gives_the_metrics_of_the_former_kernel_call(scene, tmp_path) -> None:
    """The pipeline evaluates through ``run_evaluate`` with the map's own classes and its region as WKT; before,
    it called ``evaluate_map`` with the model's schema and the region geometry: the same bytes."""
    region = _pix_box(0, 0, 12, 25).union(_pix_box(20, 5, 30, 30))
    before = evaluate_map(
        scene["map"],
        scene["truth"],
        attribute="kind",
        schema=SCHEMA,
        aoi=region,
        output=tmp_path / "a" / "m.json",
    )
    res = run_evaluate(
        EvaluateOptions(
            map=scene["map"],
            truth=scene["truth"],
            attribute="kind",
            aoi=region.wkt,
            output=tmp_path / "b" / "m.json",
        )
    )
    assert res.metrics == before and before["evaluation"]["aoi"] == str(region)
    for name in ("m.json", "m.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
