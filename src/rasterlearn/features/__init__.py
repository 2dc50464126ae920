"""Analysis of any raster (foundation-model feature rasters or raw bands), fitted on bounded samples and
applied block by block: :mod:`~rasterlearn.features.reduce` (PCA, UMAP, ...),
:mod:`~rasterlearn.features.cluster` (k-means, HDBSCAN, ...), :mod:`~rasterlearn.features.similarity`
(cosine similarity to references) and :mod:`~rasterlearn.features.classify` (random forest, k-NN, ... with
spatial cross-validation). Sampling helpers live in :mod:`~rasterlearn.features.sampling`.

Submodules import scikit-learn lazily; importing this package is cheap.
"""

from __future__ import annotations

__all__ = ["classify", "cluster", "reduce", "sampling", "similarity"]
