"""Analysis of any raster (foundation-model feature rasters or raw bands), fitted on bounded samples and
applied block by block: :mod:`~rasterlearn.features.reduce` (PCA, UMAP, ...),
:mod:`~rasterlearn.features.cluster` (k-means, HDBSCAN, ...), :mod:`~rasterlearn.features.similarity`
(cosine similarity to references) and :mod:`~rasterlearn.features.classify` (random forest, k-NN, ... with
spatial cross-validation). Sampling helpers live in :mod:`~rasterlearn.features.sampling`, classify's
folds and validation metrics in :mod:`~rasterlearn.features.validation`, and the write phase the stages
share (:func:`~rasterlearn.features._io.write_map`) in :mod:`~rasterlearn.features._io`.

Submodules import scikit-learn lazily; importing this package is cheap.
"""

from __future__ import annotations

__all__ = ["classify", "cluster", "reduce", "sampling", "similarity", "validation"]
