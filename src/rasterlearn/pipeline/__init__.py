"""A whole run in one YAML file: scenes, classes, chips, training, prediction, evaluation, features.

:class:`RunConfig` is the file's schema (pydantic, every section ``extra="forbid"``: a typo is an error that
names the key and its section). :func:`run_pipeline` composes the library stages::

    chips ─> train ─> predict (+ vectorize) ─> evaluate ─┐
    features (embed ─> PCA ─> k-means ─> similarity) ────┴─> report.html

Stage cache. Each stage's *canonical parameters* (its section, the identities of its input files and the
hashes of the stages it depends on) are hashed. A stage lives in ``OUT/<stage>/`` with a ``stage.json``
that records the hash, the parameters and ``"status": "running"`` while it runs, then ``"complete"`` with
its outputs (each version written to a temporary name and renamed). On the next run a complete stage
with the same hash is skipped; a stage with another hash is cleared and re-run, and so is every stage
after it (their hashes include it). A stage interrupted while running resumes with its own mechanism:
chips skip finished chips, training continues from ``train/checkpoints/last.ckpt``, prediction continues
from the last committed block of each map, embedding from its last committed strip.

Held-out scenes: scenes whose ``split`` is ``tst`` are not cut into chips; they are predicted and
evaluated whole (train on one scene, evaluate on another). Scenes that are chipped are evaluated inside
the footprint of their ``tst`` chips (spatial blocks never seen in training) when there are some.
"""

from rasterlearn.pipeline.cache import RUN_FORMAT as RUN_FORMAT
from rasterlearn.pipeline.cache import STAGE_FILE as STAGE_FILE
from rasterlearn.pipeline.cache import StageCache, StageRecord, canonical_hash
from rasterlearn.pipeline.config import (
    ChipsSection,
    ClassesSection,
    EvaluateSection,
    FeaturesSection,
    PredictSection,
    ReportSection,
    RunConfig,
    SceneEntry,
    load_config,
)
from rasterlearn.pipeline.config import ClassEntry as ClassEntry
from rasterlearn.pipeline.config import out_dir_of as out_dir_of
from rasterlearn.pipeline.runner import RunResult, run_pipeline
from rasterlearn.pipeline.scenes import ResolvedScene as ResolvedScene
from rasterlearn.pipeline.scenes import resolve_scenes as resolve_scenes
from rasterlearn.pipeline.stages import STAGES
from rasterlearn.pipeline.stages import Progress as Progress
from rasterlearn.pipeline.template import TEMPLATE as TEMPLATE
from rasterlearn.pipeline.template import init_config

__all__ = [
    "STAGES",
    "ChipsSection",
    "ClassesSection",
    "EvaluateSection",
    "FeaturesSection",
    "PredictSection",
    "ReportSection",
    "RunConfig",
    "RunResult",
    "SceneEntry",
    "StageCache",
    "StageRecord",
    "canonical_hash",
    "init_config",
    "load_config",
    "run_pipeline",
]
