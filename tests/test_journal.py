"""The job journal (rasterlearn.engine.journal): one fingerprint, one skip/resume/restart rule, one log line.

Fingerprints leave out exactly the options each stage declares output-neutral and change with every other
option; the decision is the same rule for a block writer, a pipeline stage and a training run; existing
fingerprints keep their values (they are recorded in outputs, progress records, checkpoints, stage.json).
"""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pydantic import BaseModel, ValidationError

from rasterlearn._util import file_identity, stable_hash
from rasterlearn.engine.executor import LocalExecutor
from rasterlearn.engine.journal import Decision, decide, fingerprint, input_identity
from rasterlearn.engine.reduction import ReductionRecord
from rasterlearn.errors import ConfigError, InputNotFoundError, JobCancelledError
from rasterlearn.grid import Grid, plan_tiles
from rasterlearn.io.writer import BlockWriter
from rasterlearn.options import (
    STAGE_OPTIONS,
    ChipsOptions,
    EmbedOptions,
    EvaluateOptions,
    PredictOptions,
)
from rasterlearn.pipeline import (
    ChipsSection,
    EvaluateSection,
    FeaturesSection,
    PredictSection,
    StageCache,
    canonical_hash,
)
from rasterlearn.train import TrainConfig

GRID = Grid(40, 40, Affine(2.0, 0.0, 300_000.0, 0.0, -2.0, 5_000_000.0), "EPSG:32632")
MODELS: list[type[BaseModel]] = [*STAGE_OPTIONS.values(), TrainConfig]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def journal_log() -> Iterator[list[str]]:
    """The journal's DEBUG lines (its own handler: the CLI's logging setup may stop propagation)."""
    logger = logging.getLogger("rasterlearn.journal")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- fingerprints ---------------------------------------------------------------------------------


def _other_value(model: type[BaseModel], name: str) -> Any:
    """A valid value of field ``name`` that differs (as JSON) from its default."""
    field = model.model_fields[name]
    default = model.model_validate({}).model_dump(mode="json")[name]
    candidates: list[Any] = []
    for arg in (field.annotation, *typing.get_args(field.annotation)):
        if typing.get_origin(arg) is typing.Literal:
            candidates += list(typing.get_args(arg))
    if isinstance(default, bool):
        candidates.append(not default)
    if isinstance(default, int | float) and not isinstance(default, bool):
        candidates += [default + 1, default - 1, default / 2, default * 2]
    candidates += [1, 2, 0.5, "early", "ce", "x", "a.tif", ["a.tif"], [1], {"1": 1.0}, {"ce": {}}, "{}"]
    for value in candidates:
        try:
            dumped = model.model_validate({name: value}).model_dump(mode="json")[name]
        except (ValidationError, ConfigError):
            continue
        if dumped != default:
            return value
    raise AssertionError(f"no other valid value found for {model.__name__}.{name}")


def _fp(model: type[BaseModel], values: dict[str, Any] | None = None) -> str:
    obj = model.model_validate(values or {})
    return obj.fingerprint()  # type: ignore[attr-defined,no-any-return]


def _hashed_away(model: type[BaseModel]) -> frozenset[str]:
    """What a model's own ``fingerprint()`` leaves out: the resume-neutral options for training."""
    return TrainConfig.resume_neutral if model is TrainConfig else model.neutral_fields()  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_fingerprint_ignores_neutral_fields_and_follows_every_other(model: type[BaseModel]) -> None:
    base = _fp(model)
    neutral = _hashed_away(model)
    assert neutral, f"{model.__name__} declares no output-neutral option"
    changed, kept = [], []
    for name in model.model_fields:
        fp = _fp(model, {name: _other_value(model, name)})
        (kept if fp == base else changed).append(name)
    assert sorted(kept) == sorted(n for n in model.model_fields if n in neutral)
    assert sorted(changed) == sorted(n for n in model.model_fields if n not in neutral)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_declared_neutral_options_are_options(model: type[BaseModel]) -> None:
    extra = {"cache_mb"} if model.__name__ == "ChipsOptions" else set()  # make_chips keyword, no CLI option
    assert set(model.neutral_fields()) <= set(model.model_fields) | extra  # type: ignore[attr-defined]


def test_pipeline_stage_hashes_leave_out_what_they_left_out_before() -> None:
    # the pipeline takes its sections' neutral keys from the stage models: the same keys as before
    assert PredictOptions.neutral_fields() & set(PredictSection.model_fields) == {
        "device",
        "batch_size",
        "memory_mb",
    }
    assert EmbedOptions.neutral_fields() & set(FeaturesSection.model_fields) == {"device", "batch_size"}
    assert not ChipsOptions.neutral_fields() & set(ChipsSection.model_fields)
    assert not EvaluateOptions.neutral_fields() & set(EvaluateSection.model_fields)
    assert TrainConfig.neutral_fields() == {"num_workers", "sample_chips"}
    assert TrainConfig.extendable == "epochs" and "epochs" in TrainConfig.resume_neutral


def test_existing_fingerprints_keep_their_values() -> None:
    # recorded in checkpoints, stage.json, progress records and outputs: a refactor must not change them
    assert TrainConfig().fingerprint() == "f5a2e87ef4c4fc73"
    assert TrainConfig(temporal="early", lr=0.01).fingerprint() == "c9a5f92bb16914ff"
    assert canonical_hash({"a": 1, "b": [1.0, {"c": Path("x")}], "d": 2.5}) == "12ac511255325787"
    arr = np.arange(6, dtype="float32")
    assert fingerprint({"m": "pca", "k": 3}, arr, None) == stable_hash({"m": "pca", "k": 3}, arr)
    assert fingerprint({"a": 1}, length=64) == stable_hash({"a": 1}, length=64)


def test_fingerprint_neutral_keys_and_input_identities(tmp_path: Path) -> None:
    f = tmp_path / "in.tif"
    f.write_bytes(b"abc")
    params = {"size": 256, "workers": 4}
    base = fingerprint(params, neutral={"workers"}, inputs={"image": f})
    assert base == fingerprint({"size": 256, "workers": 1}, neutral={"workers"}, inputs={"image": f})
    assert base == stable_hash({"size": 256, "inputs": {"image": file_identity(f)}})
    assert base != fingerprint({"size": 512, "workers": 4}, neutral={"workers"}, inputs={"image": f})
    f.write_bytes(b"abcd")  # the input changed: another fingerprint
    assert base != fingerprint(params, neutral={"workers"}, inputs={"image": f})
    assert input_identity(None) is None
    with pytest.raises(InputNotFoundError, match=r"missing\.tif"):
        input_identity(tmp_path / "missing.tif")


# -- decisions ------------------------------------------------------------------------------------


def test_decide_rules_and_log_line(journal_log: list[str]) -> None:
    assert decide("j", "a", None) == Decision("start", "no record of an earlier run", "new")
    assert decide("j", "a", "a", complete=True).action == "skip"
    assert decide("j", "a", "a", done=3) == Decision(
        "resume", "interrupted run with the same fingerprint, 3 blocks committed", "interrupted"
    )
    assert decide("j", "a", "b", complete=True).cause == "changed"
    assert decide("j", "a", "a", complete=True, resume=False).action == "restart"
    assert decide("j", "a", "a", complete=True, extend=("epochs", 2, 5)).action == "resume"
    assert decide("j", "a", "a", complete=True, extend=("epochs", 5, 2)).action == "restart"
    assert decide("j", "a", "a", extend=("epochs", 5, 2), shrink="skip").action == "skip"
    assert decide("j", "a", "a", complete=True, extend=("epochs", 5, 5)).cause == "complete"
    assert decide("j", "a", "b", quiet=True).action == "restart"
    assert len(journal_log) == 9  # quiet: no line
    assert journal_log[0] == "journal j: start (no record of an earlier run)"
    assert journal_log[3] == "journal j: restart (parameters changed (fingerprint b -> a))"
    assert journal_log[5] == "journal j: resume (epochs raised from 2 to 5, same fingerprint)"


def test_verbose_flag_shows_the_journal_line() -> None:
    from rasterlearn.cli._app import setup_logging

    logger = logging.getLogger("rasterlearn")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    try:
        setup_logging(0, False)
        assert not logging.getLogger("rasterlearn.journal").isEnabledFor(logging.DEBUG)
        setup_logging(1, False)  # -v
        assert logging.getLogger("rasterlearn.journal").isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]


def _interrupted_writer(out: Path, fp: str) -> None:
    w = BlockWriter(out, GRID, 1, "uint8", resume=True, fingerprint=fp)
    win = next(iter(plan_tiles(GRID, 16, 16)))
    w.write(np.ones((1, 16, 16), "uint8"), win)
    w.mark_done("b0", commit_every_s=0)
    w._ds.close()  # a crash: no close()


def _writer_decision(out: Path, fp: str, resume: bool, lines: list[str]) -> tuple[str, frozenset[str]]:
    lines.clear()
    w = BlockWriter(out, GRID, 1, "uint8", resume=resume, fingerprint=fp)
    done = w.done
    w.abort(keep_partial=True)
    (line,) = [ln for ln in lines if ln.startswith(f"journal {out}:")]
    return line.split(": ", 1)[1], done


def test_block_writer_decisions(tmp_path: Path, journal_log: list[str]) -> None:
    out = tmp_path / "map.tif"
    assert _writer_decision(out, "fp", True, journal_log)[0].startswith("start (")
    _interrupted_writer(out, "fp")
    line, done = _writer_decision(out, "fp", True, journal_log)
    assert line == "resume (interrupted run with the same fingerprint, 1 blocks committed)"
    assert done == {"b0"}
    line, done = _writer_decision(out, "other", True, journal_log)
    assert line.startswith("restart (parameters changed (fingerprint fp -> other))") and not done
    _interrupted_writer(out, "fp")
    line, done = _writer_decision(out, "fp", False, journal_log)  # --no-resume
    assert line.startswith("restart (resuming not asked") and not done


def test_pipeline_stage_decisions(tmp_path: Path, journal_log: list[str]) -> None:
    cache = StageCache(tmp_path)
    assert cache.decide("train", "h1").action == "start"
    cache.begin("train", "h1", {"epochs": 2})
    assert cache.decide("train", "h1").cause == "interrupted"  # resume
    assert cache.state("train", "h1") == "partial"
    cache.finish("train", {}, {})
    assert cache.decide("train", "h1", extend=("epochs", 2)) == Decision(
        "skip", "complete with the same fingerprint", "complete"
    )
    assert cache.decide("train", "h1", extend=("epochs", 5)).cause == "raised"  # resume
    assert cache.decide("train", "h1", extend=("epochs", 1)).action == "restart"  # lowered
    assert cache.decide("train", "h1", forced=True).cause == "forced"
    assert cache.decide("train", "h2").cause == "changed"
    assert cache.state("train", "h2") == "stale"
    assert journal_log[-1] == "journal stage train: restart (parameters changed (fingerprint h1 -> h2))"
    foreign = tmp_path / "predict"
    foreign.mkdir()
    (foreign / "x.txt").write_text("not ours")
    assert cache.decide("predict", "h").cause == "foreign"
    assert cache.state("predict", "h") == "stale"


def _checkpoint(out: Path, config: TrainConfig) -> None:
    import torch

    (out / "checkpoints").mkdir(parents=True)
    extra = {"config": config.model_dump(mode="json"), "fingerprint": config.fingerprint()}
    torch.save({"epoch": 1, "rasterlearn": extra}, out / "checkpoints" / "last.ckpt")


def test_training_decisions(tmp_path: Path, journal_log: list[str]) -> None:
    from rasterlearn.train.resume import resume_checkpoint

    _checkpoint(tmp_path, TrainConfig(epochs=3, lr=0.01))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert resume_checkpoint(tmp_path, TrainConfig(epochs=5, lr=0.01), resume=True, overwrite=False) == (
        last,
        last,
    )
    assert journal_log[-1] == f"journal {last}: resume (epochs raised from 3 to 5, same fingerprint)"
    # options that only change how it runs may change too
    resume_checkpoint(tmp_path, TrainConfig(epochs=3, lr=0.01, num_workers=0), resume=True, overwrite=False)
    assert journal_log[-1].endswith("resume (interrupted run with the same fingerprint)")
    # fewer epochs: the longer training stands
    resume_checkpoint(tmp_path, TrainConfig(epochs=2, lr=0.01), resume=True, overwrite=False)
    assert journal_log[-1].endswith("skip (epochs lowered from 3 to 2; the longer run stands)")
    # another output-relevant option: restart, which --resume refuses, naming the option
    with pytest.raises(ConfigError, match=r"options differ from that run \(lr\)"):
        resume_checkpoint(tmp_path, TrainConfig(epochs=5, lr=0.1), resume=True, overwrite=False)
    assert "restart (parameters changed" in journal_log[-1]
    # --overwrite: restart, the old checkpoints removed
    assert resume_checkpoint(tmp_path, TrainConfig(lr=0.1), resume=False, overwrite=True) == (last, None)
    assert journal_log[-1].startswith(f"journal {last}: restart (resuming not asked")
    assert not last.exists()


# -- reduction records (evaluate, vectorize) ------------------------------------------------------------


def _opened(out: Path | None, fp: str, initial: Any, **kw: Any) -> ReductionRecord:
    """A record as a run finds it (entered: locked and decided; left again: the lock released)."""
    with ReductionRecord(out, fp, initial, **kw) as rec:
        return rec


def _cancelled(out: Path | None, fp: str, folds: list[tuple[str, Any]], **kw: Any) -> ReductionRecord:
    """A run that folds ``folds`` and is then cancelled (raised from its progress callback)."""
    with pytest.raises(JobCancelledError), ReductionRecord(out, fp, None, **kw) as rec:
        for key, state in folds:
            rec.mark_done(key, state)
            if out is not None and kw.get("commit_every_s") == 3600:
                assert not rec.path.exists()  # type: ignore[union-attr]  # at most every commit_every_s
        raise JobCancelledError("cancelled")
    return rec


def test_reduction_record_start_cancel_resume_restart_complete(
    tmp_path: Path, journal_log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "metrics.json"
    path = tmp_path / ".metrics.json.progress.json"
    rec = _cancelled(out, "fp", [("0:0", {"n": 1}), ("0:16", {"n": 3})], commit_every_s=3600)
    assert rec.decision.action == "start" and rec.path == path
    assert journal_log[0] == f"journal {out}: start (no record of an earlier run)"
    assert json.loads(path.read_text()) == {"fingerprint": "fp", "done": ["0:0", "0:16"], "state": {"n": 3}}
    assert not (tmp_path / ".metrics.json.lock").exists()  # the lock is released
    with caplog.at_level(logging.INFO, logger="rasterlearn"):
        again = _opened(out, "fp", {"n": 0}, unit="windows")
    assert again.decision.action == "resume" and again.state == {"n": 3}
    assert again.is_done("0:16") and not again.is_done("16:0")
    assert f"Resuming {out}: 2 windows already done" in caplog.text
    assert (
        journal_log[-1]
        == f"journal {out}: resume (interrupted run with the same fingerprint, 2 blocks committed)"
    )
    other = _opened(out, "other", {"n": 0})
    assert other.decision.action == "restart" and other.state == {"n": 0} and not other.done
    assert journal_log[-1].startswith(
        f"journal {out}: restart (parameters changed (fingerprint fp -> other))"
    )
    assert _opened(out, "fp", {"n": 0}, resume=False).decision.cause == "not-resuming"
    with ReductionRecord(out, "fp", {"n": 0}) as rec:
        rec.mark_done("16:0", {"n": 4})
        rec.complete()
    assert not path.exists() and rec.done == {"0:0", "0:16", "16:0"} and rec.state == {"n": 4}


def test_reduction_record_commits_every_few_seconds_and_only_with_an_output(tmp_path: Path) -> None:
    out = tmp_path / "polygons.gpkg"
    with ReductionRecord(out, "fp", [], commit_every_s=0) as rec:
        rec.mark_done("a", [["x"]])
        assert json.loads(rec.path.read_text())["state"] == [["x"]]  # type: ignore[union-attr]
    memory = _cancelled(None, "fp", [("a", [1])])  # nothing written: no output to keep it beside
    assert memory.path is None and memory.state == [1] and list(tmp_path.iterdir()) == [rec.path]


@pytest.mark.parametrize(
    "text", ["{not json", '{"fingerprint": "fp"}', '{"fingerprint": "fp", "done": ["a"], "state": -1}']
)
def test_a_corrupt_reduction_record_restarts_with_a_warning(
    text: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, journal_log: list[str]
) -> None:
    out = tmp_path / "metrics.json"
    (tmp_path / ".metrics.json.progress.json").write_text(text)
    with caplog.at_level(logging.WARNING, logger="rasterlearn"):
        rec = _opened(out, "fp", {"n": 0}, valid=lambda s: isinstance(s, dict))
    assert rec.decision == Decision("restart", "progress record unreadable", "unreadable")
    assert rec.state == {"n": 0} and not rec.done
    assert "is unreadable; starting" in caplog.text
    assert journal_log[-1].endswith("(progress record unreadable)")


@pytest.fixture
def class_map(tmp_path: Path) -> Path:
    from rasterlearn.io.writer import write_array

    rng = np.random.default_rng(3)
    m = rng.integers(0, 3, (40, 40)).astype("uint8")
    m[:, 20:] = np.repeat(rng.integers(0, 3, (4, 2)), 10, axis=0).repeat(10, axis=1)  # blocky regions
    m[0:3] = 255
    return write_array(
        tmp_path / "map.tif", m[None], GRID, nodata=255, category_names={0: "a", 1: "b", 2: "c"}
    )


class _Counting(LocalExecutor):
    """An executor other than the local one (as a dask executor is): counts the windows it is given."""

    def __init__(self) -> None:
        self.windows = 0

    def map(self, kernel: Any, items: Any, shared: Any = None) -> Any:
        items = list(items)
        self.windows += len(items)
        return super().map(kernel, items, shared)


def _stop_at(n: int) -> Any:
    calls = [0]

    def progress(pixels: int) -> None:
        calls[0] += 1
        if calls[0] >= n:
            raise JobCancelledError("cancelled")

    return progress


def test_evaluate_resumes_the_counts_on_any_executor(
    class_map: Path, tmp_path: Path, journal_log: list[str]
) -> None:
    from rasterlearn.evaluate import evaluate_map

    truth = class_map.with_name("truth.tif")
    with rasterio.open(class_map) as ds:
        prof, data = ds.profile, ds.read(1)
    with rasterio.open(truth, "w", **prof) as ds:
        ds.write(np.where(np.arange(40)[:, None] % 7 == 0, (data + 1) % 3, data).astype("uint8"), 1)
    kw: dict[str, Any] = {"window_size": 16}
    expected = evaluate_map(class_map, truth, output=tmp_path / "full.json", **kw)  # 3 x 3 windows
    out = tmp_path / "m.json"
    with pytest.raises(JobCancelledError):
        evaluate_map(class_map, truth, output=out, progress=_stop_at(4), **kw)
    assert not out.exists() and len(json.loads((tmp_path / ".m.json.progress.json").read_text())["done"]) == 4
    executor = _Counting()  # the executor is output-neutral: the record is resumed
    assert evaluate_map(class_map, truth, output=out, executor=executor, **kw) == expected
    assert executor.windows == 5 and "resume (interrupted" in journal_log[-1]
    assert out.read_bytes() == (tmp_path / "full.json").read_bytes()
    assert not (tmp_path / ".m.json.progress.json").exists()
    # another output-relevant option: the counts start again
    with pytest.raises(JobCancelledError):
        evaluate_map(class_map, truth, output=out, progress=_stop_at(2), **kw)
    executor = _Counting()
    ignoring = evaluate_map(class_map, truth, output=out, executor=executor, ignore_values=[2], **kw)
    assert executor.windows == 9 and "restart (parameters changed" in " ".join(journal_log)
    assert ignoring == evaluate_map(class_map, truth, ignore_values=[2], **kw)


@pytest.mark.parametrize("stop", [1, 4, 8])
def test_vectorize_resumed_anywhere_gives_the_same_polygons(
    class_map: Path, tmp_path: Path, stop: int
) -> None:
    from rasterlearn.vectorize import vectorize_raster

    (tmp_path / "full").mkdir()
    full = tmp_path / "full" / "p.geojson"  # the same name: GeoJSON records it
    vectorize_raster(class_map, full, window_size=16)
    out = tmp_path / "p.geojson"
    with pytest.raises(JobCancelledError):
        vectorize_raster(class_map, out, window_size=16, progress=_stop_at(stop))
    record = json.loads((tmp_path / ".p.geojson.progress.json").read_text())
    assert len(record["done"]) == stop and record["state"]["seam"]
    vectorize_raster(class_map, out, window_size=16)
    assert out.read_bytes() == full.read_bytes()
    assert not (tmp_path / ".p.geojson.progress.json").exists()


@pytest.mark.slow
def test_evaluate_cancelled_on_dask_resumes_there(
    class_map: Path, tmp_path: Path, dask_executor: Any, journal_log: list[str]
) -> None:
    from rasterlearn.evaluate import evaluate_map

    kw: dict[str, Any] = {"window_size": 16, "executor": dask_executor}
    expected = evaluate_map(class_map, class_map, output=tmp_path / "full" / "m.json", **kw)
    out = tmp_path / "m.json"
    with pytest.raises(JobCancelledError):
        evaluate_map(class_map, class_map, output=out, progress=_stop_at(5), **kw)
    assert len(json.loads((tmp_path / ".m.json.progress.json").read_text())["done"]) == 5
    seen: list[int] = []
    assert evaluate_map(class_map, class_map, output=out, progress=seen.append, **kw) == expected
    assert "resume (interrupted run with the same fingerprint, 5 blocks" in journal_log[-1]
    assert sum(seen) == 40 * 40 and out.read_bytes() == (tmp_path / "full" / "m.json").read_bytes()
