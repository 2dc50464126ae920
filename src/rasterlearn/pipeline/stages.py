"""The stages of a run: each one's canonical parameters and its body (chips, train, predict and
vectorize, evaluate, features), run through the stage cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterlearn.engine.journal import Decision, input_identity, without
from rasterlearn.errors import ConfigError
from rasterlearn.options import (
    ChipsOptions,
    ClusterOptions,
    EmbedOptions,
    EvaluateOptions,
    PredictOptions,
    ReduceOptions,
    SimilarityOptions,
)
from rasterlearn.pipeline.cache import StageCache, StageRecord, canonical_hash
from rasterlearn.pipeline.config import FeaturesSection, PredictSection, RunConfig, _resolve
from rasterlearn.pipeline.scenes import ResolvedScene, resolve_scenes

if TYPE_CHECKING:
    from rasterlearn.labels import ClassSchema

# one logger for the whole package, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.pipeline")


STAGES = ("chips", "train", "predict", "evaluate", "features")
Progress = Callable[[str, int], None]
_CHIPS_KEYS = {"unknown": "unknown_classes"}
"""Keys of the run YAML's ``chips`` section named otherwise in :class:`ChipsOptions`."""


class _Stages:
    """The stages of a run; :class:`rasterlearn.pipeline.runner._Runner` runs them in order."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None, force: Sequence[str]) -> None:
        self.cfg = cfg
        self.out = out
        self.cache = StageCache(out)
        self.progress = progress
        self.force = set(force)
        self.records: dict[str, StageRecord] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.scenes = resolve_scenes(cfg)
        # fail before hours of training: scene selections are checked up front
        if cfg.predict.enabled:
            self.predict_scenes()
        if cfg.features.enabled:
            self.feature_scenes()

    def cb(self, stage: str) -> Callable[[int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress

        def advance(n: int = 1) -> None:
            progress(stage, int(n))

        return advance

    def stage(
        self,
        name: str,
        params: dict[str, Any],
        body: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]],
        unhashed: dict[str, Any] | None = None,
        extend: str | None = None,
    ) -> StageRecord:
        """Skip, resume or (re)run stage ``name`` (the journal's decision, :meth:`StageCache.decide`):
        ``params`` make its hash; ``unhashed`` parameters are recorded in ``stage.json`` beside them but do
        not make the stage stale; ``extend`` names the unhashed one a finished stage can be extended by
        (see :meth:`run_train`)."""
        h = canonical_hash(params)
        ext = None if extend is None else (extend, (unhashed or {})[extend])
        decision = self.cache.decide(name, h, forced=name in self.force, extend=ext)
        if decision.cause == "forced":
            self.cache.invalidate(name)
        elif decision.cause in ("raised", "lowered"):
            self._extended(name, decision, ext)
        if decision.action == "skip":
            rec = self.cache.record(name)
            assert rec is not None
            log.info("Stage %s: up to date (hash %s), skipped", name, h)
            self.skipped.append(name)
            self.records[name] = rec
            return rec
        log.info("Stage %s: %s (hash %s)", name, "resuming" if decision.action == "resume" else "running", h)
        t0 = time.perf_counter()
        folder = self.cache.begin(name, h, {**params, **(unhashed or {})})
        outputs, summary = body(folder)
        rec = self.cache.finish(name, outputs, summary, round(time.perf_counter() - t0, 2))
        log.info("Stage %s: complete in %.1f s", name, rec.seconds or 0.0)
        self.ran.append(name)
        self.records[name] = rec
        return rec

    def _extended(self, name: str, decision: Decision, ext: tuple[str, Any] | None) -> None:
        """A finished or interrupted stage of the same options with another ``epochs``: resume it when
        raised (the stage is reopened), clear it when lowered (its model trained longer than asked)."""
        rec = self.cache.record(name)
        assert rec is not None and ext is not None
        key, now = ext
        before = rec.params.get(key)
        if decision.cause == "raised":
            log.info(
                "Stage %s: %s raised from %d to %d; training continues from its last checkpoint",
                name,
                key,
                before,
                now,
            )
            if rec.status == "complete":
                self.cache.reopen(name)
        else:
            log.warning("Stage %s: %s lowered from %d to %d; training starts again", name, key, before, now)
            self.cache.invalidate(name)

    # -- chips -----------------------------------------------------------------------------------
    def chip_scenes(self) -> list[ResolvedScene]:
        scenes = [s for s in self.scenes if s.has_labels and not s.heldout]
        if not scenes:
            raise ConfigError(
                "No scene to cut into training chips: every scene is held out (split: tst) or has no "
                "labels. Give at least one labelled scene without split or with split trn/val."
            )
        return scenes

    def inline_schema(self) -> ClassSchema | None:
        """The class schema of the run YAML's inline classes (``classes.classes``), else ``None``."""
        d = self.cfg.classes.schema_dict()
        if self.cfg.classes.file is not None or d is None:
            return None
        from rasterlearn.labels import ClassSchema as Schema

        return Schema.from_dict(d)

    def chips_options(self, output: Path) -> ChipsOptions:
        """The run YAML's ``chips`` and ``classes`` sections as the chips stage's options: the one place where
        their keys meet the options model's (``unknown`` is ``unknown_classes``; the classes' ``file``,
        ``attribute``, ``burn_value`` and ``ignore_index`` apply to every scene; files are resolved beside the
        run YAML). The scenes and an inline class list go to :func:`rasterlearn.chips.run_chips` as objects."""
        from rasterlearn.chips.options import validate_options

        ch, c = self.cfg.chips, self.cfg.classes
        values = {_CHIPS_KEYS.get(k, k): v for k, v in ch.model_dump().items()}
        label_areas = ch.label_areas
        if label_areas not in (None, "features", "extent"):
            label_areas = str(_resolve(self.cfg, label_areas))
        values |= {
            "label_areas": label_areas,
            "attribute": c.attribute,
            "burn_value": c.burn_value,
            "ignore_index": c.ignore_index,
            "schema": _resolve(self.cfg, c.file),
            "output": output,
        }
        return validate_options(values, "chips options of the run")

    def run_chips(self) -> StageRecord:
        scenes = self.chip_scenes()
        c = self.cfg.classes
        params = {
            "scenes": [s.identity() for s in scenes],
            "classes": c.model_dump(mode="json")
            | {"file": input_identity(_resolve(self.cfg, c.file)) if c.file else None},
            "chips": without(self.cfg.chips.model_dump(mode="json"), ChipsOptions.neutral_fields()),
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.chips import run_chips

            res = run_chips(
                self.chips_options(folder / "dataset"),
                scenes=[s.to_chips_scene() for s in scenes],
                schema=self.inline_schema(),
                progress=self.cb("chips"),
            )
            summary = {
                "chips": len(res.manifest),
                **{f"chips_{k}": int(v) for k, v in res.splits.items()},
            }
            return {"dataset": str(res.out)}, summary

        return self.stage("chips", params, body)

    # -- train -----------------------------------------------------------------------------------
    def run_train(self, chips: StageRecord) -> StageRecord:
        t = self.cfg.train
        cfg_json = without(t.model_dump(mode="json"), t.neutral_fields())
        if t.weights:
            cfg_json["weights"] = input_identity(_resolve(self.cfg, t.weights))
        # epochs are not part of the hash: more epochs continue the training from its last checkpoint (as
        # ``train --resume`` does), fewer start it again
        epochs = cfg_json.pop(t.extendable)
        params = {"upstream": {"chips": _token(chips)}, "train": cfg_json}

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.train import train

            config = t
            if t.weights:
                config = t.model_copy(update={"weights": str(_resolve(self.cfg, t.weights))})
            last = folder / "checkpoints" / "last.ckpt"
            resume = _usable_checkpoint(last)
            if resume:
                log.info("Training resumes from %s", last)
            res = train(
                chips.outputs["dataset"],
                folder,
                config,
                resume=resume,
                overwrite=not resume,
                progress=self.cb("train"),
            )
            m = res.metrics
            summary = {
                "val_mean_iou": m.get("mean_iou"),
                "val_overall_accuracy": m.get("overall_accuracy"),
                "val_kappa": m.get("kappa"),
                "val_warnings": len(m.get("warnings") or []),
                "epochs_trained": res.epochs_trained,
            }
            return {"package": str(folder), "files": {k: str(v) for k, v in res.files.items()}}, summary

        return self.stage("train", params, body, unhashed={t.extendable: epochs}, extend=t.extendable)

    # -- predict ---------------------------------------------------------------------------------
    def predict_scenes(self) -> list[ResolvedScene]:
        sel = self.cfg.predict.scenes
        if isinstance(sel, list):
            by_id = {s.id: s for s in self.scenes}
            missing = [x for x in sel if x not in by_id]
            if missing:
                raise ConfigError(f"predict.scenes: unknown scene ids {missing}; scenes are {list(by_id)}")
            return [by_id[x] for x in sel]
        held = [s for s in self.scenes if s.heldout]
        if sel == "heldout":
            if not held:
                raise ConfigError("predict.scenes is 'heldout' but no scene has split: tst")
            return held
        if sel == "all":
            return list(self.scenes)
        return held or list(self.scenes)

    def run_predict(self, train: StageRecord) -> StageRecord:
        p = self.cfg.predict
        scenes = self.predict_scenes()
        pj = without(p.model_dump(mode="json"), PredictOptions.neutral_fields())
        params = {
            "upstream": {"train": _token(train)},
            "scenes": [{"id": s.id, "image": input_identity(s.image)} for s in scenes],
            "predict": pj,
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.models import load_metadata
            from rasterlearn.predict_run import run_predict

            package = Path(train.outputs["package"])
            meta = load_metadata(package)
            schema = meta.class_schema
            outputs: dict[str, Any] = {"maps": {}, "probabilities": {}, "polygons": {}}
            summary: dict[str, Any] = {"scenes": len(scenes)}
            for s in scenes:
                map_path = folder / f"{s.id}.tif"
                prob_path = folder / f"{s.id}_probabilities.tif" if p.probabilities else None
                if map_path.exists() and (prob_path is None or prob_path.exists()):
                    log.info("Map of %s already complete: %s", s.id, map_path)
                else:
                    options = _predict_options(p, package, s.image, map_path, prob_path)
                    res = run_predict(options, progress=self.cb("predict")).one
                    assert res is not None
                    summary[f"{s.id}_px_per_s"] = round(res.pixels_per_second, 1)
                    summary[f"{s.id}_blocks_resumed"] = res.blocks_resumed
                outputs["maps"][s.id] = str(map_path)
                if prob_path is not None:
                    outputs["probabilities"][s.id] = str(prob_path)
                if p.vectorize:
                    outputs["polygons"][s.id] = str(
                        self._vectorize(map_path, folder / f"{s.id}.gpkg", schema)
                    )
            return outputs, summary

        return self.stage("predict", params, body)

    def _vectorize(self, map_path: Path, out: Path, schema: Any) -> Path:
        from rasterlearn.vectorize import vectorize_raster

        p = self.cfg.predict
        if out.exists():
            return out
        exclude: list[int] | None
        if p.exclude == "background":
            exclude = [schema.background] if schema.background is not None else None
        else:
            exclude = p.exclude
        vectorize_raster(map_path, out, min_area=p.min_area, simplify=p.simplify, exclude=exclude)
        return out

    # -- evaluate --------------------------------------------------------------------------------
    def run_evaluate(
        self, chips: StageRecord, train: StageRecord, predict: StageRecord | None
    ) -> StageRecord:
        e = self.cfg.evaluate
        params = {
            "upstream": {
                "chips": _token(chips),
                "train": _token(train),
                "predict": _token(predict) if predict else None,
            },
            "evaluate": without(e.model_dump(mode="json"), EvaluateOptions.neutral_fields()),
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            package = Path(train.outputs["package"])
            dataset = Path(chips.outputs["dataset"])
            outputs: dict[str, Any] = {"maps": {}}
            summary: dict[str, Any] = {}
            if e.test_chips and int(chips.summary.get("chips_tst", 0)) > 0:
                from rasterlearn.train import evaluate_model

                m = evaluate_model(package, dataset, split="tst", out=folder / "test_chips.json")
                outputs["test_chips"] = str(folder / "test_chips.json")
                summary["test_chips_mean_iou"] = m.get("mean_iou")
                summary["test_chips_overall_accuracy"] = m.get("overall_accuracy")
                summary["test_chips_kappa"] = m.get("kappa")
            maps = predict.outputs.get("maps", {}) if predict else {}
            by_id = {s.id: s for s in self.scenes}
            for sid, map_path in maps.items():
                s = by_id[sid]
                if not s.has_labels:
                    log.info("Scene %s has no labels; its map is not evaluated", sid)
                    continue
                aoi, region = self._region(s, dataset)
                if aoi is False:
                    continue
                from rasterlearn.evaluate import run_evaluate

                out_json = folder / f"{sid}.json"
                m = run_evaluate(self.evaluate_options(s, Path(map_path), aoi, out_json)).metrics
                outputs["maps"][sid] = {"metrics": str(out_json), "region": region}
                summary[f"{sid}_mean_iou"] = m.get("mean_iou")
                summary[f"{sid}_overall_accuracy"] = m.get("overall_accuracy")
                summary[f"{sid}_kappa"] = m.get("kappa")
                summary[f"{sid}_min_class_iou"] = min(
                    (
                        float(pc.get("iou") or 0.0)
                        for pc in m.get("per_class", {}).values()
                        if pc.get("support")
                    ),
                    default=None,
                )
                summary[f"{sid}_region"] = region
            return outputs, summary

        return self.stage("evaluate", params, body)

    def evaluate_options(self, s: ResolvedScene, map_path: Path, aoi: Any, output: Path) -> EvaluateOptions:
        """The options evaluating scene ``s``'s map, from the run's ``evaluate`` section (``unlabelled``,
        ``all_touched``) and the scene (its labels with their attribute and layer, or its label raster).
        The map's classes are its own: predict's ``classes`` tag, the model's schema. ``aoi`` is the
        evaluation region (a geometry, given as WKT) or ``None``."""
        e = self.cfg.evaluate
        truth = s.labels or s.label_raster
        assert truth is not None
        values: dict[str, Any] = {"map": map_path, "truth": truth, "output": output, "layer": s.layer}
        values["attribute"] = s.attribute if s.labels is not None else None
        values |= {"unlabelled": e.unlabelled, "all_touched": e.all_touched}
        values["aoi"] = None if aoi is None else aoi.wkt
        return EvaluateOptions.model_validate(values)

    def _region(self, s: ResolvedScene, dataset: Path) -> tuple[Any, str]:
        """The evaluation region of a scene: whole (held out), its tst chips, or whole (with a warning)."""
        mode = self.cfg.evaluate.region
        if mode == "scene" or (mode == "auto" and s.heldout):
            return None, "scene" + (" (held out)" if s.heldout else " (includes training areas)")
        import pandas as pd
        from shapely.geometry import box
        from shapely.ops import unary_union

        man = pd.read_csv(dataset / "manifest.csv")
        rows = man[(man["split"] == "tst") & (man["scene"].astype(str) == s.id)]
        if rows.empty:
            if mode == "test_chips":
                log.warning("Scene %s has no tst chips; evaluate.region test_chips skips it", s.id)
                return False, "none"
            log.warning(
                "Scene %s was used for training and has no tst chips: its metrics include training areas "
                "(set chips.test > 0 or hold a scene out with split: tst)",
                s.id,
            )
            return None, "scene (includes training areas)"
        geom = unary_union([box(r.minx, r.miny, r.maxx, r.maxy) for r in rows.itertuples()])
        return geom, f"tst chips ({len(rows)})"

    # -- features --------------------------------------------------------------------------------
    def feature_scenes(self) -> list[ResolvedScene]:
        f = self.cfg.features
        if f.scenes == "all":
            return list(self.scenes)
        by_id = {s.id: s for s in self.scenes}
        missing = [x for x in f.scenes if x not in by_id]
        if missing:
            raise ConfigError(f"features.scenes: unknown scene ids {missing}; scenes are {list(by_id)}")
        return [by_id[x] for x in f.scenes]

    def run_features(self) -> StageRecord:
        f = self.cfg.features
        scenes = self.feature_scenes()
        fj = without(f.model_dump(mode="json"), EmbedOptions.neutral_fields())
        refs = _resolve(self.cfg, f.references)
        fj["checkpoint"] = input_identity(_resolve(self.cfg, f.checkpoint)) if f.checkpoint else None
        fj["references"] = input_identity(refs) if refs else None
        params = {"scenes": [{"id": s.id, "image": input_identity(s.image)} for s in scenes], "features": fj}

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.embed import run_embed
            from rasterlearn.features import run_cluster, run_reduce, run_similarity

            outputs: dict[str, Any] = {}
            summary: dict[str, Any] = {
                "model": f.model,
                "pretrained": bool(f.pretrained and not f.checkpoint),
            }
            for s in scenes:
                o: dict[str, Any] = {}
                feat = folder / f"{s.id}_features.tif"
                if not feat.exists():
                    opts = _embed_options(f, s, feat, _resolve(self.cfg, f.checkpoint), folder)
                    res = run_embed(opts, progress=self.cb("features"))
                    summary[f"{s.id}_dim"] = res.dim
                    summary[f"{s.id}_weights_sha256"] = res.parameters.get("weights_sha256")
                o["features"] = str(feat)
                pca_job, clu_job, sim_job = _analysis_options(f, feat, folder / s.id, refs)
                if pca_job is not None and pca_job.output is not None:
                    if not pca_job.output.exists():
                        ev = run_reduce(pca_job).explained_variance_ratio
                        if ev:
                            summary[f"{s.id}_pca_explained"] = round(float(sum(ev)), 4)
                    o["pca"] = str(pca_job.output)
                if clu_job is not None and clu_job.output is not None:
                    if not clu_job.output.exists():
                        run_cluster(clu_job)
                    o["clusters"] = str(clu_job.output)
                if sim_job is not None and sim_job.output is not None:
                    if not sim_job.output.exists():
                        run_similarity(sim_job)
                    o["similarity"] = str(sim_job.output)
                outputs[s.id] = o
            return outputs, summary

        return self.stage("features", params, body)


# the keys of the run YAML's predict section that are PredictOptions fields under the same name; the others
# are the pipeline's own (enabled, scenes; probabilities as a yes/no; vectorize, min_area, simplify and
# exclude of its vectorize step, which keeps its own exclude/simplify rules)
_PREDICT_KEYS = (
    "overlap",
    "blend",
    "tta",
    "batch_size",
    "prob_dtype",
    "threshold",
    "device",
    "blocksize",
    "memory_mb",
    "window",
)


def _predict_options(
    p: PredictSection, package: Path, image: Path | str, map_path: Path, prob_path: Path | None
) -> PredictOptions:
    """The :class:`~rasterlearn.options.PredictOptions` of one scene of the predict stage: the section's
    keys (:data:`_PREDICT_KEYS`) plus the package, the scene and its outputs; an interrupted map resumes."""
    return PredictOptions.model_validate(
        {
            **p.model_dump(include=set(_PREDICT_KEYS)),
            "model": package,
            "raster": [str(image)],
            "output": map_path,
            "probabilities": prob_path,
        }
    )


def _embed_options(
    f: FeaturesSection, scene: ResolvedScene, output: Path, checkpoint: str | Path | None, folder: Path
) -> EmbedOptions:
    """The embed options of the run's ``features`` section for one scene: the section's keys mapped to the
    stage's fields in this one place (``pretrained`` is ``no_pretrained`` negated; the rest keep their
    names), the scene's image as the raster, sessions in the stage folder."""
    return EmbedOptions.model_validate(
        {
            "raster": str(scene.image),
            "model": f.model,
            "output": output,
            "checkpoint": checkpoint,
            "no_pretrained": not f.pretrained,
            "seed": f.seed,
            "model_kwargs": f.model_kwargs or None,
            "bands": f.bands,
            "size": f.size,
            "stride": f.stride,
            "input_size": f.input_size,
            "layer": f.layer,
            "normalization": f.normalization,
            "storage": f.storage,
            "device": f.device,
            "batch_size": f.batch_size,
            "cache_dir": folder / "embed_sessions",
        }
    )


def _analysis_options(
    f: FeaturesSection, features: Path, prefix: Path, references: Path | None
) -> tuple[ReduceOptions | None, ClusterOptions | None, SimilarityOptions | None]:
    """The ``features`` section's analysis steps on one scene's feature raster as the stages' options (the
    section's keys mapped to the models' fields here only): PCA to ``PREFIX_pca.tif`` (``pca_components``,
    0: none), k-means to ``PREFIX_clusters.tif`` (``clusters``, 0: none) and the similarity map to
    ``PREFIX_similarity.tif`` (with ``references``), all seeded with ``seed``."""
    raster, name, seed = str(features), prefix.name, f.seed
    pca = clu = sim = None
    if f.pca_components:
        pca = ReduceOptions.model_validate(
            {"raster": raster, "output": prefix.with_name(f"{name}_pca.tif"), "method": "pca"}
            | {"components": f.pca_components, "seed": seed}
        )
    if f.clusters:
        clu = ClusterOptions.model_validate(
            {"raster": raster, "output": prefix.with_name(f"{name}_clusters.tif"), "method": "kmeans"}
            | {"clusters": f.clusters, "seed": seed}
        )
    if references is not None:
        sim = SimilarityOptions.model_validate(
            {"raster": raster, "output": prefix.with_name(f"{name}_similarity.tif"), "references": references}
            | {"mode": f.similarity_mode, "seed": seed}
        )
    return pca, clu, sim


def _token(rec: StageRecord) -> str:
    """What downstream stages depend on: the upstream hash *and* its completion time, so that an upstream
    stage that ran again (forced, or cleared by hand) re-runs what follows even with equal parameters."""
    return canonical_hash([rec.hash, rec.finished])


def _usable_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a loadable Lightning checkpoint (a kill while it was written leaves it broken)."""
    if not path.exists():
        return False
    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file fails in several ways (EOFError, RuntimeError, ...)
        log.warning("Checkpoint %s is unreadable (%s); training starts again", path, exc)
        path.unlink()
        return False
    return True
