"""The feature stages' API: ``run_reduce/run_cluster/run_similarity/run_classify(options)``.

(a) ``run_*`` with an options model writes exactly the bytes the command line writes with the same options;
(b) the command line's flags and a ``--config`` file with the same keys hand the same model to ``run_*``;
(c) the resume fingerprint of a feature map comes from the options model: it changes with every option that
    is not output-neutral and not with a neutral one (the fingerprint function over every field, and real
    interrupted runs that resume or restart);
and the pipeline's features section maps to the same options (and outputs) as the keyword calls it replaced.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import ValidationError

from rasterlearn.errors import ConfigError, JobCancelledError
from rasterlearn.features import run_classify, run_cluster, run_reduce, run_similarity
from rasterlearn.features._stage import call_options, job_fingerprint
from rasterlearn.options import (
    ClassifyOptions,
    ClusterOptions,
    ReduceOptions,
    SimilarityOptions,
    StageOptions,
)
from tests.test_stage_contracts import _features, _points

MODELS: list[type[StageOptions]] = [ReduceOptions, ClusterOptions, SimilarityOptions, ClassifyOptions]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "in"
    src.mkdir()
    return {"raster": _features(src), "points": _points(src, "points.gpkg")}


# ---------------------------------------------------------------------------------------------------------
# (a) run_* writes the bytes of the command line
# ---------------------------------------------------------------------------------------------------------
def _case(name: str, i: dict[str, Path], out: Path) -> tuple[list[str], StageOptions, list[Path]]:
    """The command line, the same options as a model, and the files the run writes."""
    r, p = str(i["raster"]), str(i["points"])
    if name == "reduce":
        argv = ["reduce", r, "-o", str(out), "-k", "2", "--bands", "1,2,4", "--seed", "3"]
        opts: StageOptions = ReduceOptions(raster=r, output=out, components=2, bands="1,2,4", seed=3)
        return argv, opts, [out, out.with_name("out.model") / "arrays.npz"]
    if name == "cluster":
        argv = ["cluster", r, "-o", str(out), "-k", "3", "--sample-size", "1500", "--params", '{"n_init": 2}']
        opts = ClusterOptions(raster=r, output=out, clusters=3, sample_size=1500, params={"n_init": 2})
        return argv, opts, [out, out.with_name("out.clusters.json")]
    if name == "similarity":
        argv = ["similarity", r, "-r", p, "-o", str(out), "--mode", "max", "--standardize"]
        opts = SimilarityOptions(raster=r, references=p, output=out, mode="max", standardize=True)
        return argv, opts, [out]
    argv = ["classify", r, "-l", p, "-a", "cls", "--method", "knn", "--cv", "random", "--folds", "2"]
    argv += ["-o", str(out)]
    opts = ClassifyOptions(
        raster=r, labels=p, attribute="cls", method="knn", cv="random", folds=2, output=out
    )
    return argv, opts, [out, out.with_name("out.metrics.json")]


RUN = {"reduce": run_reduce, "cluster": run_cluster, "similarity": run_similarity, "classify": run_classify}


@pytest.mark.parametrize("name", list(RUN))
def test_run_function_writes_the_bytes_of_the_command_line(name, inputs, tmp_path) -> None:
    from rasterlearn.cli import main

    out = tmp_path / "run" / "out.tif"
    out.parent.mkdir()
    argv, opts, files = _case(name, inputs, out)
    assert main([*argv, "--progress", "none"]) == 0
    by_cli = {f: f.read_bytes() for f in files}
    shutil.rmtree(out.parent)
    out.parent.mkdir()
    res = RUN[name](opts)  # type: ignore[operator]
    assert res.path == out
    for f, data in by_cli.items():
        assert f.read_bytes() == data, f"{name}: {f.name} differs from the command line's"
    if name == "classify":
        assert res.metrics["samples"] == json.loads(files[1].read_text())["samples"] > 0


def test_run_functions_announce_the_block_total(inputs, tmp_path, monkeypatch) -> None:
    from rasterlearn.engine.events import Monitor
    from tests.test_stage_contracts import BLOCKS, _small_feature_blocks

    _small_feature_blocks(monkeypatch)
    events: list[Any] = []
    phase = Monitor("t", events.append, min_interval=0.0).phase("reduce")  # no total given
    run_reduce(
        ReduceOptions(raster=str(inputs["raster"]), output=tmp_path / "r.tif", components=2), progress=phase
    )
    totals = [e.total for e in events if e.kind == "progress"]
    assert totals[0] == BLOCKS and phase.done == BLOCKS


def test_missing_inputs_are_one_config_error_naming_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"rasterlearn reduce: raster not given.*'raster:'"):
        run_reduce(ReduceOptions(output=tmp_path / "x.tif"))
    with pytest.raises(ConfigError, match=r"references"):
        run_similarity(SimilarityOptions(raster="a.tif", output=tmp_path / "x.tif"))


# ---------------------------------------------------------------------------------------------------------
# (b) flags and --config hand the same model to run_*
# ---------------------------------------------------------------------------------------------------------
FLAGS_AND_KEYS: dict[str, tuple[str, dict[str, Any]]] = {
    "reduce": (
        "--method fast_ica -k 2 --bands 1,2,3 --sample-size 500 --seed 4 --no-standardize "
        """--model-out m.model --trust-model --params '{"whiten": "unit-variance"}'""",
        {"method": "fast_ica", "components": 2, "params": {"whiten": "unit-variance"}, "bands": [1, 2, 3]}
        | {
            "sample_size": 500,
            "seed": 4,
            "no_standardize": True,
            "model_out": "m.model",
            "trust_model": True,
        },
    ),
    "cluster": (
        "--method gmm -k 4 --sample-size 900 --seed 2 --bands 2,3",
        {"method": "gmm", "clusters": 4, "sample_size": 900, "seed": 2, "bands": "2,3"},
    ),
    "similarity": (
        "--mode max --rate 0.5 --max-per-feature 20 --standardize --layer points",
        {"mode": "max", "rate": 0.5, "max_per_feature": 20, "standardize": True, "layer": "points"},
    ),
    "classify": (
        "-a cls --method knn --task classification --cv fold --folds 3 --fold-column cls --rate 0.5 "
        "--max-per-feature 9 --metrics m.json",
        {"attribute": "cls", "method": "knn", "task": "classification", "cv": "fold", "folds": 3}
        | {"fold_column": "cls", "rate": 0.5, "max_per_feature": 9, "metrics": "m.json"},
    ),
}


def _captured(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> StageOptions:
    import importlib

    from rasterlearn.cli import main

    seen: list[StageOptions] = []

    def spy(options: StageOptions, *, progress: Any = None) -> Any:
        seen.append(options)
        raise ConfigError("captured")

    monkeypatch.setattr(importlib.import_module(f"rasterlearn.features.{name}"), f"run_{name}", spy)
    assert main([name, *argv, "--progress", "none"]) == 2
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("name", list(FLAGS_AND_KEYS))
def test_flags_and_config_file_give_the_same_options(name, inputs, tmp_path, monkeypatch) -> None:
    flags, keys = FLAGS_AND_KEYS[name]
    out = tmp_path / "o.tif"
    refs = ["-r", str(inputs["points"])] if name == "similarity" else []
    refs += ["-l", str(inputs["points"])] if name == "classify" else []
    argv = [str(inputs["raster"]), "-o", str(out), *refs, *shlex.split(flags)]
    by_flags = _captured(name, argv, monkeypatch)
    doc = {"raster": str(inputs["raster"]), "output": str(out), **keys}
    doc |= {"references": str(inputs["points"])} if name == "similarity" else {}
    doc |= {"labels": str(inputs["points"])} if name == "classify" else {}
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    by_file = _captured(name, ["--config", str(cfg)], monkeypatch)
    assert by_file == by_flags
    assert by_flags.model_dump() != type(by_flags)().model_dump()  # the options did arrive
    if name == "similarity":  # a file-only key reaches the model too
        cfg.write_text(yaml.safe_dump(doc | {"seed": 5}))
        seeded = _captured(name, ["--config", str(cfg)], monkeypatch)
        assert isinstance(seeded, SimilarityOptions) and seeded.seed == 5


# ---------------------------------------------------------------------------------------------------------
# (c) the fingerprint is the options model less its output-neutral fields
# ---------------------------------------------------------------------------------------------------------
def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is not None and str(get_origin(annotation)).endswith("Literal"):
        return list(get_args(annotation))
    return [v for a in get_args(annotation) for v in _literals(a)]


def _other_value(model: type[StageOptions], name: str) -> Any:
    """A valid value of ``name`` other than its default."""
    field = model.model_fields[name]
    default = field.get_default()
    choices = [c for c in _literals(field.annotation) if c != default]
    if choices:
        return choices[0]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default + 1
    for candidate in ("other", 7, 0.5):
        try:
            model.model_validate({name: candidate})
        except ValidationError:
            continue
        return candidate
    raise AssertionError(f"{model.__name__}.{name}: no other value found")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.command)
def test_every_option_changes_the_fingerprint_unless_declared_neutral(model: type[StageOptions]) -> None:
    base = model.model_validate({})
    resolved = {"model": "abc", "bands": [1, 2]}
    fp = job_fingerprint(base, resolved, {"raster": None})
    assert job_fingerprint(base, resolved, {"raster": None}) == fp  # stable
    assert job_fingerprint(base, {**resolved, "model": "abd"}, {"raster": None}) != fp  # the fitted model
    neutral = model.neutral_fields()
    assert neutral >= {"scheduler", "workers"}
    for name in model.model_fields:
        changed = model.model_validate({name: _other_value(model, name)})
        same = job_fingerprint(changed, resolved, {"raster": None}) == fp
        assert same == (name in neutral), f"{model.command}.{name}: neutral={name in neutral}, same={same}"


def test_kernel_keywords_give_the_options_model_and_what_it_cannot_hold(inputs) -> None:
    import geopandas as gpd

    refs = gpd.read_file(inputs["points"])
    job, rest = call_options(
        SimilarityOptions,
        {"raster": inputs["raster"], "references": refs, "layer": 0, "bands": [1, "b2"], "mode": "max"},
    )
    assert job.raster == str(inputs["raster"]) and job.bands == "1,b2" and job.mode == "max"
    assert job.references is None and job.layer is None
    assert rest == {"references": "GeoDataFrame", "layer": 0}
    job2, rest2 = call_options(ClassifyOptions, {"max_per_feature": None, "labels": inputs["points"]})
    assert job2.max_per_feature == 2000 and rest2 == {"max_per_feature": None}
    assert job2.labels == inputs["points"]


def _cancel_after(n: int) -> Any:
    calls = [0]

    def progress(k: int = 1) -> None:
        calls[0] += 1
        if calls[0] == n:
            raise JobCancelledError("test cancel")

    return progress


def _interrupted_then(opts: ReduceOptions, rerun: ReduceOptions, caplog: pytest.LogCaptureFixture) -> bool:
    """Interrupt a run of ``opts`` after 2 blocks, run ``rerun``; whether it resumed the partial map."""
    with pytest.raises(JobCancelledError):
        run_reduce(opts, progress=_cancel_after(2))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="rasterlearn"):
        run_reduce(rerun)
    return "blocks already written" in caplog.text


def test_real_runs_resume_across_neutral_options_and_restart_on_others(inputs, tmp_path, monkeypatch, caplog):
    from tests.test_stage_contracts import _small_feature_blocks

    _small_feature_blocks(monkeypatch)
    out = tmp_path / "r" / "pca.tif"
    out.parent.mkdir()
    opts = ReduceOptions(raster=str(inputs["raster"]), output=out, components=2)
    assert _interrupted_then(opts, opts.model_copy(update={"trust_model": True}), caplog)
    expected = out.read_bytes()
    shutil.rmtree(out.parent)
    out.parent.mkdir()
    assert not _interrupted_then(opts, opts.model_copy(update={"seed": 1}), caplog)
    assert "restart" in caplog.text.lower() or "discard" in caplog.text.lower()
    shutil.rmtree(out.parent)
    out.parent.mkdir()
    run_reduce(opts)
    assert out.read_bytes() == expected  # the resumed map is the uninterrupted one


def test_the_keyword_kernel_resumes_a_run_of_the_options_api(inputs, tmp_path, monkeypatch, caplog) -> None:
    """The kernel builds the same options model from its keywords: one fingerprint for both entry points."""
    from rasterlearn.features.cluster import cluster_raster
    from tests.test_stage_contracts import _small_feature_blocks

    _small_feature_blocks(monkeypatch)
    out = tmp_path / "c.tif"
    opts = ClusterOptions(raster=str(inputs["raster"]), output=out, clusters=3, sample_size=800, seed=2)
    with pytest.raises(JobCancelledError):
        run_cluster(opts, progress=_cancel_after(3))
    with caplog.at_level(logging.INFO, logger="rasterlearn"):
        cluster_raster(inputs["raster"], out, clusters=3, sample_size=800, seed=2, blocksize=512)
    assert "blocks already written" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# the run YAML's features section
# ---------------------------------------------------------------------------------------------------------
def test_pipeline_section_maps_to_the_options_of_the_former_keyword_calls(inputs, tmp_path) -> None:
    """``_analysis_options`` + ``run_*`` write the bytes of the keyword calls the pipeline made before."""
    from rasterlearn.features.cluster import cluster_raster
    from rasterlearn.features.reduce import reduce_raster
    from rasterlearn.features.similarity import similarity_raster
    from rasterlearn.pipeline.config import FeaturesSection
    from rasterlearn.pipeline.stages import _analysis_options

    f = FeaturesSection.model_validate(
        {"pca_components": 2, "clusters": 3, "similarity_mode": "max", "seed": 4}
    )
    feat, refs, folder = inputs["raster"], inputs["points"], tmp_path / "stage"
    folder.mkdir()
    pca, clu, sim = _analysis_options(f, feat, folder / "s1", refs)
    assert pca is not None and clu is not None and sim is not None
    assert pca.output == folder / "s1_pca.tif" and sim.seed == 4 and sim.mode == "max"
    before = {
        "pca": reduce_raster(feat, folder / "s1_pca.tif", method="pca", components=2, seed=4).path,
        "clu": cluster_raster(feat, folder / "s1_clusters.tif", method="kmeans", clusters=3, seed=4).path,
        "sim": similarity_raster(feat, refs, folder / "s1_similarity.tif", mode="max", seed=4).path,
    }
    old = {k: p.read_bytes() for k, p in before.items()}
    shutil.rmtree(folder)
    folder.mkdir()
    now = {"pca": run_reduce(pca).path, "clu": run_cluster(clu).path, "sim": run_similarity(sim).path}
    assert {k: p.read_bytes() for k, p in now.items()} == old
