"""Accuracy assessment and area estimation from a probability sample of a class map.

The good-practice workflow of Olofsson et al. (2013, 2014) and Stehman (2014): draw a probability sample of
the map (:func:`draw_sample`: stratified random, simple random or systematic; streamed over maps of any
size), label the sample with reference classes (e.g. in QGIS), then estimate the error matrix in proportions
of area, overall, user's and producer's accuracy and every class's area with standard errors and
confidence intervals (:func:`assess_sample`). The estimators themselves are pure numpy functions on arrays
(:mod:`rasterlearn.assess.estimate`, :mod:`rasterlearn.assess.design`).
"""

from __future__ import annotations

from rasterlearn.assess.design import allocate, inclusion_probabilities, sample_size, systematic_step
from rasterlearn.assess.estimate import AccuracyEstimates, estimate_accuracy, estimate_from_counts, z_value
from rasterlearn.assess.run import assess_sample
from rasterlearn.assess.sample import SampleResult, count_population, draw_sample
from rasterlearn.assess.store import read_design

__all__ = [
    "AccuracyEstimates",
    "SampleResult",
    "allocate",
    "assess_sample",
    "count_population",
    "draw_sample",
    "estimate_accuracy",
    "estimate_from_counts",
    "inclusion_probabilities",
    "read_design",
    "sample_size",
    "systematic_step",
    "z_value",
]
