"""Analysis of any raster (foundation-model feature rasters or raw bands), fitted on bounded samples and
applied block by block: :mod:`~rasterlearn.features.reduce` (PCA, UMAP, ...),
:mod:`~rasterlearn.features.cluster` (k-means, HDBSCAN, ...), :mod:`~rasterlearn.features.similarity`
(cosine similarity to references) and :mod:`~rasterlearn.features.classify` (random forest, k-NN, ... with
spatial cross-validation). Sampling helpers live in :mod:`~rasterlearn.features.sampling`, classify's
folds and validation metrics in :mod:`~rasterlearn.features.validation`, and the write phase the stages
share (:func:`~rasterlearn.features._io.write_map`) in :mod:`~rasterlearn.features._io`.

Each stage's API is one function taking its options model (:mod:`rasterlearn.options`), as the command
line, ``--config`` files and the run YAML do: :func:`run_reduce` (:class:`~rasterlearn.options.ReduceOptions`),
:func:`run_cluster`, :func:`run_similarity` and :func:`run_classify`; the keyword functions they call
(``reduce_raster`` ...) are the lower level. :func:`feature_blocks` is the number of blocks a stage's options
will process (the progress total).

Submodules import scikit-learn lazily; importing this package is cheap (the stage functions are imported
on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rasterlearn.features._stage import feature_blocks
    from rasterlearn.features.classify import run_classify
    from rasterlearn.features.cluster import run_cluster
    from rasterlearn.features.reduce import run_reduce
    from rasterlearn.features.similarity import run_similarity

__all__ = [
    "classify",
    "cluster",
    "feature_blocks",
    "reduce",
    "run_classify",
    "run_cluster",
    "run_reduce",
    "run_similarity",
    "sampling",
    "similarity",
    "validation",
]

_STAGE_FUNCTIONS = {
    "feature_blocks": "_stage",
    "run_reduce": "reduce",
    "run_cluster": "cluster",
    "run_similarity": "similarity",
    "run_classify": "classify",
}


def __getattr__(name: str) -> Any:
    """The stage functions, imported from their module on first use."""
    if name in _STAGE_FUNCTIONS:
        module = importlib.import_module(f"{__name__}.{_STAGE_FUNCTIONS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
