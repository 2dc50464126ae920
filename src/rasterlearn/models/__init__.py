"""Segmentation model factory and the self-describing *model package*.

A model package is a folder holding ``model.safetensors`` (weights, no pickle) and ``model.json``
(:class:`ModelMetadata`: architecture and its arguments, bands, normalization, class schema, chip size,
ground sample distance, CRS units, training summary, library versions). :func:`load_package` rebuilds the
model from these two files alone.

The package is split by concern: :mod:`.registry` (architectures), :mod:`.weights` (reading state dicts,
transferring weights, first-layer adaptation), :mod:`.factory` (:func:`create_model`) and :mod:`.package`
(saving and loading model packages).
"""

from __future__ import annotations

from rasterlearn.models.factory import create_model, freeze_encoder, tiny_model
from rasterlearn.models.package import (
    META_FILE,
    PACKAGE_FORMAT,
    ModelMetadata,
    ModelPackage,
    library_versions,
    load_metadata,
    load_package,
    save_package,
)
from rasterlearn.models.registry import (
    CHANNEL_STRATEGIES,
    ChannelStrategy,
    ModelSpec,
    check_chip_size,
    list_models,
    model_spec,
    register_model,
)
from rasterlearn.models.weights import (
    WEIGHTS_FILE,
    adapt_first_layer,
    read_state_dict,
    rgb_band_indexes,
    transfer_weights,
)

__all__ = [
    "CHANNEL_STRATEGIES",
    "META_FILE",
    "PACKAGE_FORMAT",
    "WEIGHTS_FILE",
    "ChannelStrategy",
    "ModelMetadata",
    "ModelPackage",
    "ModelSpec",
    "adapt_first_layer",
    "check_chip_size",
    "create_model",
    "freeze_encoder",
    "library_versions",
    "list_models",
    "load_metadata",
    "load_package",
    "model_spec",
    "read_state_dict",
    "register_model",
    "rgb_band_indexes",
    "save_package",
    "tiny_model",
    "transfer_weights",
]
