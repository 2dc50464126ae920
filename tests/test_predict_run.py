"""The predict stage from its options model: ``run_predict(PredictOptions(...))`` is what the CLI, ``--config``
and the run YAML call; the resume fingerprint comes from the options model (less its output-neutral fields)
and what it resolved to, the same whether the kernel is called through the stage or with keywords."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.errors import InputError
from rasterlearn.options import PredictOptions
from rasterlearn.predict import PredictResult, PredictRunResult, predict_package, predict_raster, run_predict
from rasterlearn.predict_options import JobOptions
from tests.test_predict import _package


@pytest.fixture()
def scene(make_raster) -> Path:
    rng = np.random.default_rng(5)
    return make_raster(rng.integers(1, 250, (3, 70, 50)).astype("uint8"), name="scene.tif", nodata=None)


@pytest.fixture()
def fingerprints(monkeypatch) -> list[str]:
    """The resume fingerprint of every prediction job run while the test runs."""
    import rasterlearn.predict as predict_mod

    seen: list[str] = []
    real = predict_mod.run_job

    def spy(job, progress=None):
        seen.append(job.fingerprint)
        return real(job, progress)

    monkeypatch.setattr(predict_mod, "run_job", spy)
    return seen


def test_run_predict_writes_the_bytes_the_cli_writes(scene: Path, tmp_path: Path) -> None:
    from rasterlearn.cli import main

    pkg = _package(tmp_path)
    common = {"tta": "hflip", "blocksize": 32, "threads": 1, "overlap": 0.5}
    (tmp_path / "api").mkdir()
    (tmp_path / "cli").mkdir()
    api = run_predict(
        PredictOptions(
            model=pkg,
            raster=[str(scene)],
            output=tmp_path / "api" / "map.tif",
            probabilities=tmp_path / "api" / "prob.tif",
            vectorize=tmp_path / "api" / "poly.gpkg",
            **common,
        )
    )
    args = ["--tta", "hflip", "--blocksize", "32", "--threads", "1", "--overlap", "0.5"]
    out = ["-o", str(tmp_path / "cli" / "map.tif"), "--probabilities", str(tmp_path / "cli" / "prob.tif")]
    assert main(["-q", "predict", str(pkg), str(scene), *out, *args]) == 0
    assert api.one is not None and api.scenes is None
    assert api.one.map_path == tmp_path / "api" / "map.tif" and api.one.windows_predicted > 0
    for name in ("map.tif", "prob.tif"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    import pyogrio

    gdf = pyogrio.read_dataframe(tmp_path / "api" / "poly.gpkg", layer="poly")
    with rasterio.open(api.one.map_path) as ds:
        m = ds.read(1)
        assert json.loads(ds.tags()["parameters"])["tta"] == ["hflip"]
    assert api.polygon_count == len(gdf) and api.polygons == tmp_path / "api" / "poly.gpkg"
    assert gdf.pixels.sum() == (m != 0).sum()  # the background class is left out


def test_run_predict_many_scenes_reports_the_failed_one(scene: Path, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# two scenes\n{scene.name}\nbroken.tif\n")
    opts = PredictOptions(
        model=pkg, raster=[str(listing)], out_dir=tmp_path / "maps", blocksize=32, threads=1
    )
    res = run_predict(opts)
    assert res.one is None and res.scenes is not None
    assert [s.status for s in res.scenes.scenes] == ["done", "failed"]
    assert (tmp_path / "maps" / "scene.tif").exists() and res.scenes.summary_path.exists()
    msg = res.failure_message()
    assert msg is not None and msg.startswith("1 of 2 scene(s) failed: ") and "broken.tif" in msg


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"raster": ["a.tif", "b.tif"]}, "2 rasters given: name a folder for their maps with --out-dir"),
        ({"raster": ["a.tif"], "out_dir": "d", "output": "m.tif"}, "drop -o, --probabilities"),
        ({"raster": ["a.tif"], "stac": ["item.json"]}, "Give the RASTER.* or --stac ITEM.json, not both"),
        ({"raster": ["a.tif"], "assets": "B04"}, "--assets needs --stac"),
        ({"raster": ["a.tif"]}, "Name the class map to write with -o/--output"),
        ({"output": "m.tif"}, "Give the RASTER to map, or one --image per date"),
    ],
)
def test_run_predict_refuses_inputs_that_make_no_job(fields: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=message):
        run_predict(PredictOptions(model=tmp_path / "pkg", **fields))


def test_cli_options_and_config_file_give_run_predict_the_same_model(tmp_path: Path, monkeypatch) -> None:
    import rasterlearn.cli.predict as cli_predict
    from rasterlearn.cli import main

    seen: list[PredictOptions] = []

    def capture(options: PredictOptions, *, progress=None) -> PredictRunResult:
        seen.append(options)
        out = Path(options.output or "m.tif")
        return PredictRunResult(one=PredictResult(out, None, 1, 1, 0, 0, 1, 1.0))

    monkeypatch.setattr(cli_predict, "run_predict", capture)
    cfg = tmp_path / "predict.yaml"
    cfg.write_text(
        "model: pkg\nraster: scene.tif\noutput: map.tif\noverlap: 0.5\ntta: [hflip, vflip]\n"
        "bands: [3, 2, 1]\naoi: [500000, 4000000, 500640, 4000640]\nwindow: 64\nno_resume: true\n"
        "memory_mb: 300\nnodata_policy: any-valid\n"
    )
    cli_args = ["pkg", "scene.tif", "-o", "map.tif", "--overlap", "0.5", "--tta", "hflip,vflip"]
    cli_args += ["--bands", "3,2,1", "--aoi", "500000,4000000,500640,4000640", "--window", "64"]
    cli_args += ["--no-resume", "--memory-mb", "300", "--nodata-policy", "any-valid"]
    assert main(["-q", "predict", *cli_args]) == 0
    assert main(["-q", "predict", "--config", str(cfg)]) == 0
    assert len(seen) == 2
    assert seen[0].model_dump() == seen[1].model_dump()
    assert seen[0].raster == ["scene.tif"] and seen[0].tta == "hflip,vflip" and seen[0].no_resume


def test_predict_raster_keywords_are_the_job_options() -> None:
    params = inspect.signature(predict_raster).parameters
    keywords = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"progress"}
    assert keywords == {f.name for f in dataclasses.fields(JobOptions)}


def test_fingerprint_follows_output_changing_options_not_neutral_ones(
    scene: Path, tmp_path: Path, fingerprints: list[str]
) -> None:
    pkg = _package(tmp_path)
    base = {"model": pkg, "raster": [str(scene)], "output": tmp_path / "m.tif", "window": 64}
    base |= {"blocksize": 32, "threads": 1, "overwrite": True}

    def fp(**changes: object) -> str:
        run_predict(PredictOptions.model_validate({**base, **changes}))
        return fingerprints[-1]

    first = fp()
    # output-neutral: memory budget (the window is pinned), batch size, reader threads, cache, device
    assert fp(memory_mb=300, batch_size=1, io_threads=1, cache_mb=8, device="cpu") == first
    changed = [fp(overlap=0.5), fp(blend="none"), fp(tta="hflip"), fp(window=96), fp(nodata=7)]
    assert len({first, *changed}) == 1 + len(changed)
    # the kernel's keywords give the same fingerprint as the options model (texts parsed the same way)
    stage = fp(bands="1, 2,3", tta="flips")
    predict_package(
        pkg, scene, tmp_path / "m.tif", window=64, blocksize=32, threads=1, overwrite=True, bands=[1, 2, 3],
        tta=["hflip", "vflip"],
    )  # fmt: skip
    assert fingerprints[-1] == stage


def test_job_options_as_options_model() -> None:
    defaults = {
        n: p.default for n, p in inspect.signature(predict_raster).parameters.items() if n != "progress"
    }
    defaults = {k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(JobOptions)}}
    opts = JobOptions(
        **{**defaults, "window": (128, 128), "aoi": (1, 2, 3, 4), "tta": "flips", "resume": False}
    )
    model = opts.as_options()
    assert (model.window, model.aoi, model.tta, model.no_resume) == (
        128,
        "1.0,2.0,3.0,4.0",
        "hflip,vflip",
        True,
    )
    assert (
        dataclasses.replace(opts, window=(64, 128)).as_options().window is None
    )  # pinned by the resolved one
    # the defaults of the kernel are the defaults of the options model
    assert JobOptions(**defaults).as_options().model_dump() == PredictOptions().model_dump()


def test_pipeline_predict_section_maps_onto_the_options_model() -> None:
    from rasterlearn.pipeline.config import PredictSection
    from rasterlearn.pipeline.stages import _PREDICT_KEYS, _predict_options

    pipeline_own = {"enabled", "scenes", "probabilities", "vectorize", "min_area", "simplify", "exclude"}
    assert set(PredictSection.model_fields) == set(_PREDICT_KEYS) | pipeline_own
    section = PredictSection.model_validate(
        {"overlap": 0.5, "tta": ["hflip"], "window": 64, "memory_mb": 300}
    )
    opts = _predict_options(section, Path("pkg"), Path("a.tif"), Path("out/a.tif"), None)
    assert (opts.overlap, opts.tta, opts.window, opts.memory_mb) == (0.5, "hflip", 64, 300)
    assert (opts.model, opts.raster, opts.output, opts.no_resume) == (
        Path("pkg"),
        ["a.tif"],
        Path("out/a.tif"),
        False,
    )
