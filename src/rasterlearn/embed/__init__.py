"""Foundation-model feature rasters: encode any raster with a timm backbone into a feature COG.

The raster is cut into tiles of ``size`` pixels every ``stride`` pixels (:func:`rasterlearn.grid.plan_tiles`,
edge policy ``pad``), each tile is normalized (nodata-aware), resized to the model input size when that
differs, and encoded. A Vision Transformer gives one feature pixel per patch (the model's own
``num_prefix_tokens``/register tokens are dropped by timm's ``forward_intermediates``, never guessed from a
square root); a CNN gives the feature map of a chosen stage. The output grid is exact: its transform is the
input grid (or the extent's origin) scaled by the *effective stride* (the patch size or stage reduction in
raster pixels), and every tile lands on whole feature pixels of it.

Overlapping tiles are merged by a true weighted mean (``average``), or ``first`` tile wins, or each tile keeps
its centre (``center``). Memory is bounded by neither height nor width (:mod:`rasterlearn.embed_stream`):
only the feature rows touched by the tile rows in flight are held, finished strips are flushed to
:class:`rasterlearn.io.writer.BlockWriter`, and a raster too wide for ``memory_mb`` is encoded in column
stripes planned by :func:`rasterlearn.grid.plan_column_stripes`, as ``predict`` does. Tiles without a valid
pixel never reach the model.

Sessions: the options that change the result (the options model less its output-neutral fields, with the
inputs' resolved values and the weights' digest) are hashed by the job journal's fingerprint; the run lives in
``<cache_dir>/<hash>/`` with ``parameters.json`` and the writer's partial/progress files, and
``<cache_dir>/index.json`` lists the sessions. A killed run started again with the same parameters resumes
from the last committed strip.

The package follows the job's phases: :mod:`~rasterlearn.embed.backbones` (recommended models, timm feature
extractors, weights), :mod:`~rasterlearn.embed.request` (the checked arguments),
:mod:`~rasterlearn.embed.layout` (feature-grid geometry and the job's plan), :mod:`~rasterlearn.embed.session`
(parameters, hash, index), :mod:`~rasterlearn.embed.source` (reading and normalization),
:mod:`~rasterlearn.embed.output` (tags, writer, storage), :mod:`~rasterlearn.embed.job` (:func:`embed`
as named phases) and :mod:`~rasterlearn.embed.stage` (:func:`run_embed`: the stage's API, taking its options
model :class:`rasterlearn.options.EmbedOptions`).
"""

from rasterlearn.embed.backbones import (
    RECOMMENDED_MODELS,
    Backbone,
    ModelInfo,
    iter_recommended,
    load_backbone,
    load_state,
)
from rasterlearn.embed.job import EmbedResult, embed
from rasterlearn.embed.layout import FeatureLayout, feature_layout
from rasterlearn.embed.request import DeviceName, MergeMode, NormMode, Storage
from rasterlearn.embed.session import SESSION_FORMAT, list_sessions, session_hash
from rasterlearn.embed.stage import embed_arguments, run_embed

__all__ = [
    "RECOMMENDED_MODELS",
    "SESSION_FORMAT",
    "Backbone",
    "DeviceName",
    "EmbedResult",
    "FeatureLayout",
    "MergeMode",
    "ModelInfo",
    "NormMode",
    "Storage",
    "embed",
    "embed_arguments",
    "feature_layout",
    "iter_recommended",
    "list_sessions",
    "load_backbone",
    "load_state",
    "run_embed",
    "session_hash",
]
