"""The commented run-config template (``rasterlearn init``)."""

from __future__ import annotations

import os
from pathlib import Path

from rasterlearn.errors import InputError, OutputError

TEMPLATE = """\
# rasterlearn run configuration: `rasterlearn run THIS_FILE.yaml`
# Every section is optional except `scenes`; unknown keys are errors. Relative paths are resolved from
# the folder of this file. Stages are cached: re-running skips finished stages, changing a section re-runs
# that stage and the ones after it, and an interrupted run resumes where it stopped.

name: my_run
out: runs/my_run                      # output folder (stage folders, maps, report.html)

# Scenes: a geo-deep-learning CSV (image, metadata, labels, attribute, split) or an inline list.
# split: trn/val put a whole scene into that split; tst holds the scene out: it is not chipped but
# mapped and evaluated whole. Scenes without a split are split spatially into blocks.
scenes:
  - image: data/scene_a.tif
    labels: data/labels.gpkg          # vector labels (or a label raster: .tif)
  - image: data/scene_b.tif
    labels: data/labels.gpkg
    split: tst
# scenes: data/scenes.csv

classes:
  attribute: class                    # class attribute of the vector labels (none: burn burn_value)
  # file: classes.yaml                # class schema (classes: [{code, name, color}]) or GDL colormap CSV
  # classes: {0: background, 1: building}
  # ignore_index: 255
  # background: 0

chips:
  size: 256                           # chip size in pixels
  stride: 128                         # step between chips (< size: overlapping chips)
  split_method: auto                  # auto | blocks | random | stratified | scene
  val: 0.15                           # fraction of chips for validation
  test: 0.15                          # fraction of chips held out for testing (spatial blocks)
  min_annotated: 0                    # percent of non-background labelled pixels a chip needs
  max_nodata: 100                     # percent of nodata pixels a chip may have
  # bands: [1, 2, 3]
  seed: 0

train:                                # every `rasterlearn train` option (see docs/training)
  arch: unet
  encoder: resnet18
  pretrained: null                    # e.g. imagenet (downloads once); null = random initialisation
  loss: auto                          # auto (ce+dice if imbalanced, else ce) | ce | dice | focal ... or {ce: 0.5, dice: 0.5}
  class_weights: auto                 # auto | none | inverse | inverse_sqrt | median
  sampler: shuffle                    # shuffle | balanced (chips holding rare classes drawn more often)
  baseline: true                      # compare with a per-pixel random forest on the same chips
  epochs: 20
  batch_size: 8
  lr: 0.001
  augment: flips                      # none | flips | geometric | full
  seed: 42

predict:
  scenes: auto                        # auto (held-out scenes, else all) | heldout | all | [scene ids]
  overlap: 0.25                       # fraction of the chip shared by neighbouring windows
  blend: hann                         # hann | center-crop | none
  tta: null                           # e.g. flips
  batch_size: 8
  probabilities: false                # also write per-class probability rasters
  vectorize: true                     # polygons of the map (GeoPackage)
  min_area: 0                         # drop smaller polygons (map units squared)

evaluate:
  region: auto                        # auto | scene | test_chips
  test_chips: true                    # also score the model on the tst chips

features:                             # foundation-model features: embed -> PCA -> k-means -> similarity
  enabled: false
  model: vit_small_patch14_dinov2.lvd142m
  pretrained: true                    # downloads once; or give checkpoint: weights.safetensors
  size: 224
  pca_components: 3
  clusters: 8
  # references: data/reference_points.gpkg

report:
  enabled: true
  sample_chips: 6
"""


def init_config(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the commented :data:`TEMPLATE` to ``path`` (refuses to replace a file unless ``overwrite``)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"{p} exists; choose another name or pass overwrite=True (CLI: --overwrite)")
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"Run configs are YAML files; use a .yaml name, got {p.name}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(TEMPLATE, encoding="utf-8")
    os.replace(tmp, p)
    return p
