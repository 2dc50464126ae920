"""The run: stages in order, ``run.json``, the report; :func:`run_pipeline`."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rasterlearn.errors import ConfigError
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.pipeline.cache import RUN_FORMAT, StageRecord, _now, _write_stage_json
from rasterlearn.pipeline.config import RunConfig, load_config, out_dir_of
from rasterlearn.pipeline.scenes import resolve_scenes
from rasterlearn.pipeline.stages import STAGES, Progress, _Stages


@dataclass
class RunResult:
    """What :func:`run_pipeline` did."""

    out: Path
    stages: dict[str, StageRecord]
    ran: list[str]
    skipped: list[str]
    report: Path | None
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """Headline metrics: validation mIoU, test-chip mIoU and each map's mIoU/OA."""
        out: dict[str, Any] = {}
        tr = self.stages.get("train")
        if tr is not None:
            out.update({k: v for k, v in tr.summary.items() if k.startswith("val_")})
        ev = self.stages.get("evaluate")
        if ev is not None:
            out.update(ev.summary)
        return out


class _Runner(_Stages):
    """Runs the enabled stages in order, then writes ``run.json`` and the report."""

    # -- all -------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None) -> RunResult:
        t0 = time.perf_counter()
        want = set(stages or STAGES)
        unknown = want - set(STAGES)
        if unknown:
            raise ConfigError(f"Unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_config()
        supervised = bool(want & {"chips", "train", "predict", "evaluate"})
        if supervised:
            chips = self.run_chips()
            train = self.run_train(chips) if want & {"train", "predict", "evaluate"} else None
            predict = (
                self.run_predict(train)
                if train is not None and self.cfg.predict.enabled and want & {"predict", "evaluate"}
                else None
            )
            if train is not None and self.cfg.evaluate.enabled and "evaluate" in want:
                self.run_evaluate(chips, train, predict)
        if self.cfg.features.enabled and "features" in want:
            self.run_features()
        report = None
        if self.cfg.report.enabled:
            report = self.write_report()
        result = RunResult(
            self.out, dict(self.records), self.ran, self.skipped, report, time.perf_counter() - t0
        )
        _write_stage_json(
            self.out / "run.json",
            {
                "format": RUN_FORMAT,
                "name": self.cfg.name,
                "finished": _now(),
                "stages": {k: {"hash": r.hash, "status": r.status} for k, r in self.records.items()},
                "ran": self.ran,
                "skipped": self.skipped,
                "metrics": result.metrics(),
                "report": str(report) if report else None,
            },
        )
        return result

    def _write_config(self) -> None:
        data = self.cfg.model_dump(mode="json")
        text = "# the validated configuration of this run (defaults filled in)\n" + yaml.safe_dump(
            data, sort_keys=False
        )
        tmp = self.out / ".config.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.out / "config.yaml")

    def write_report(self) -> Path:
        from rasterlearn.run_report import ReportInputs, write_run_report

        r = self.records
        chips = r.get("chips")
        train = r.get("train")
        predict = r.get("predict")
        evaluate = r.get("evaluate")
        features = r.get("features")
        by_id = {s.id: s for s in self.scenes}
        inputs = ReportInputs(
            title=self.cfg.report.title or f"rasterlearn run: {self.cfg.name}",
            dataset=Path(chips.outputs["dataset"]) if chips else None,
            train_dir=Path(train.outputs["package"]) if train else None,
            scenes=[
                {
                    "id": s.id,
                    "image": str(s.image),
                    "labels": str(s.labels or s.label_raster or ""),
                    "split": s.split or "",
                    "role": "held out" if s.heldout else ("training" if s.has_labels else "mapped"),
                }
                for s in self.scenes
            ],
            maps={k: Path(v) for k, v in (predict.outputs.get("maps", {}) if predict else {}).items()},
            images={sid: by_id[sid].image for sid in (predict.outputs.get("maps", {}) if predict else {})},
            polygons={
                k: Path(v) for k, v in (predict.outputs.get("polygons", {}) if predict else {}).items()
            },
            test_chips=Path(evaluate.outputs["test_chips"])
            if evaluate and "test_chips" in evaluate.outputs
            else None,
            map_metrics={
                k: (Path(v["metrics"]), v["region"])
                for k, v in (evaluate.outputs.get("maps", {}) if evaluate else {}).items()
            },
            features={
                k: {kk: Path(vv) for kk, vv in v.items()}
                for k, v in (features.outputs if features else {}).items()
            },
            features_note=_features_note(features) if features else "",
            stages={k: {"hash": v.hash, "seconds": v.seconds, "runs": v.runs} for k, v in r.items()},
            config=self.cfg.model_dump(mode="json"),
            sample_chips=self.cfg.report.sample_chips,
            quicklook_size=self.cfg.report.quicklook_size,
        )
        return write_run_report(self.out, inputs)


def _features_note(rec: StageRecord) -> str:
    model = rec.summary.get("model")
    pretrained = rec.summary.get("pretrained")
    return f"Backbone {model} ({'pretrained weights' if pretrained else 'random initialisation or local checkpoint'})."


def run_pipeline(
    config: RunConfig | str | Path | Mapping[str, Any],
    *,
    out: str | Path | None = None,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    progress: Progress | None = None,
) -> RunResult:
    """Run (or resume, or bring up to date) the whole pipeline of a run config.

    Args:
        config: a :class:`RunConfig`, a YAML path or a parsed mapping.
        out: output folder (default: the config's ``out``).
        stages: only these stages (and what they need); default all enabled stages.
        force: stages to re-run even when up to date; the stages after them run again too.
        progress: ``progress(stage, n)`` callback: chips/windows, epochs, pixels, tiles finished.

    Returns:
        :class:`RunResult` with each stage's record, what ran and what was skipped, and the report path.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    out_dir = Path(out) if out is not None else out_dir_of(cfg)
    source = None if isinstance(config, RunConfig | Mapping) else config
    scenes = [p for s in resolve_scenes(cfg) for p in (s.image, s.labels, s.label_raster)]
    check_outputs([source, *scenes], [out_dir])
    runner = _Runner(cfg, out_dir, progress, force)
    with output_lock(out_dir):  # a second run into the same folder refuses
        return runner.run(stages)
