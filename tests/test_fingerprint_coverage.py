"""Every option either changes the journal fingerprint or is declared output-neutral, once.

Predict and embed build their fingerprints from the parameters they record (``parameters`` tag; the embed
session's ``parameters.json``). These tests hold those records and the options models' ``output_neutral``
declarations together: an option added to a model fails here until it is declared neutral or recorded, so
a changed option can never resume a partial output computed with the old value.
"""

from __future__ import annotations

import json

import numpy as np

from rasterlearn.options import EmbedOptions, PredictOptions

# PredictOptions field -> where predict's fingerprint holds it: a key of the recorded ``parameters`` (tags),
# or another part of the fingerprint source (raster/model identity, outputs, many-scene and STAC provenance)
PREDICT_RECORDED = {
    "overlap": "params:overlap",
    "blend": "params:blend",
    "tta": "params:tta",
    "aoi": "params:aoi",
    "threshold": "params:threshold",
    "prob_dtype": "params:prob_dtype",
    "bands": "params:bands",
    "nodata": "params:input_nodata",
    "blocksize": "params:blocksize",
    "window": "params:window",
    "precision": "params:precision",
    "amp": "params:precision",  # mixed precision on CUDA is the recorded precision
    "runtime": "params:runtime",
    "allow_resolution_mismatch": "params:accepted_mismatches",
    "allow_dtype_mismatch": "params:accepted_mismatches",
    "model": "model identity",
    "raster": "raster identity",
    "image": "raster identity (stack provenance)",
    "nodata_policy": "raster identity (stack provenance)",
    "stac": "source",
    "assets": "source",
    "probabilities": "prob",
    "output": "the journal's own location",
    "vectorize": "a separate output written after the map",
    "min_area": "a separate output written after the map",
    "out_dir": "one job per scene",
    "mosaic": "written after the scenes",
}

# EmbedOptions field -> key of the embed session's parameters (its identity and resume fingerprint)
EMBED_RECORDED = {
    "raster": "input",
    "model": "model",
    "checkpoint": "checkpoint",
    "no_pretrained": "pretrained",
    "seed": "seed",
    "model_kwargs": "model_kwargs",
    "size": "size",
    "stride": "stride",
    "input_size": "input_size",
    "layer": "layer",
    "bands": "bands",
    "normalization": "normalization",
    "value_scale": "value_scale",
    "merge": "merge",
    "storage": "storage",
    "min_valid": "min_valid_fraction",
    "aoi": "extent",
    "aoi_crs": "extent_crs",
    "target_crs": "target_crs",
    "resolution": "resolution",
    "resampling": "resampling",
    "stac": "source",
    "assets": "source",
    "output": None,  # where the features are written, not what they are
}


def test_every_predict_option_is_recorded_or_declared_neutral() -> None:
    fields = set(PredictOptions.model_fields)
    neutral = PredictOptions.neutral_fields()
    assert not (neutral & set(PREDICT_RECORDED)), "an option is both neutral and fingerprinted"
    assert fields - neutral == set(PREDICT_RECORDED), (
        f"declare these predict options output-neutral or record them: {sorted(fields - neutral - set(PREDICT_RECORDED))}; "
        f"no longer options: {sorted(set(PREDICT_RECORDED) - fields)}"
    )


def test_every_embed_option_is_recorded_or_declared_neutral() -> None:
    fields = set(EmbedOptions.model_fields)
    neutral = EmbedOptions.neutral_fields()
    assert not (neutral & set(EMBED_RECORDED)), "an option is both neutral and fingerprinted"
    assert fields - neutral == set(EMBED_RECORDED), sorted(fields - neutral ^ set(EMBED_RECORDED))


def test_predict_records_every_parameter_the_table_names(make_raster, tmp_path) -> None:
    import rasterio

    from rasterlearn.predict import predict_raster
    from tests.test_predict import FCN, _meta

    src = make_raster(np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype("uint8"))
    out = tmp_path / "map.tif"
    predict_raster(
        FCN(3, 2), _meta(["a", "b", "c"], 2, chip=16), src, out, window=16, blocksize=16, threads=1
    )
    with rasterio.open(out) as ds:
        recorded = json.loads(ds.tags()["parameters"])
    wanted = {v.split(":", 1)[1] for v in PREDICT_RECORDED.values() if v.startswith("params:")}
    wanted.discard("accepted_mismatches")  # recorded only when a mismatch was accepted
    assert wanted <= set(recorded), sorted(wanted - set(recorded))


def test_embed_session_records_every_parameter_the_table_names(make_raster, tmp_path) -> None:
    from rasterlearn.embed import embed

    src = make_raster(np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype("uint8"))
    res = embed(
        src,
        "resnet18",
        output=tmp_path / "f.tif",
        size=32,
        pretrained=False,
        layer=1,
        cache_dir=tmp_path / "s",
    )
    params_file = res.session / "parameters.json"
    recorded = json.loads(params_file.read_text())
    wanted = {v for v in EMBED_RECORDED.values() if v is not None} - {
        "seed",
        "source",
    }  # seed: random weights
    assert wanted <= set(recorded), sorted(wanted - set(recorded))
    assert res.path.exists()
