"""Every option either changes the journal fingerprint or is declared output-neutral, once.

Predict's fingerprint holds its options model (:class:`~rasterlearn.options.PredictOptions`, built from the
values the job runs with by :meth:`rasterlearn.predict_options.JobOptions.as_options`) less the
output-neutral fields, plus what the options resolved to (the ``parameters`` tag) and the identities of the files. Embed
builds its fingerprint from the parameters it records (the embed session's ``parameters.json``). These
tests hold the models' ``output_neutral`` declarations and the fingerprints together: an option added to a
model fails here until it is declared neutral or reaches the fingerprint, so a changed option can never
resume a partial output computed with the old value.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np

from rasterlearn.engine.journal import without
from rasterlearn.options import EmbedOptions, PredictOptions

# PredictOptions fields the kernel never sees: the files and the run around one map, each fingerprinted by
# identity or belonging to a step outside the map's job
PREDICT_RUN_LEVEL = {
    "model": "model identity (weights digest)",
    "raster": "raster identity",
    "image": "raster identity (stack provenance)",
    "stac": "source",
    "assets": "source",
    "output": "the journal's own location",
    "vectorize": "a separate output written after the map",
    "min_area": "a separate output written after the map",
    "out_dir": "one job per scene",
    "mosaic": "written after the scenes",
}

# every other output-changing PredictOptions field, with another value of it (the job's options model and
# so its fingerprint must change with each)
PREDICT_CHANGED = {
    "overlap": 0.5,
    "window": 64,
    "blend": "none",
    "tta": "hflip",
    "aoi": "area.gpkg",
    "threshold": 0.3,
    "prob_dtype": "float32",
    "bands": [3, 2, 1],
    "nodata": 7.0,
    "amp": False,
    "precision": "fp32",
    "runtime": "onnx",
    "blocksize": 64,
    "allow_resolution_mismatch": True,
    "allow_dtype_mismatch": True,
    "nodata_policy": "any-valid",
    "probabilities": "prob.tif",
}

# resolved values the outputs record in their ``parameters`` tag (part of the fingerprint as well)
PREDICT_RESOLVED = ["overlap", "overlap_px", "window", "stride", "blend", "tta", "threshold", "bands"]
PREDICT_RESOLVED += ["prob_dtype", "blocksize", "aoi", "extent", "input_nodata", "precision", "runtime"]


def _job_options(**changes: object) -> object:
    from rasterlearn.predict import predict_raster
    from rasterlearn.predict_options import JobOptions

    names = {f.name for f in dataclasses.fields(JobOptions)}
    defaults = {n: p.default for n, p in inspect.signature(predict_raster).parameters.items() if n in names}
    return JobOptions(**{**defaults, **changes})


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


def test_every_predict_option_is_fingerprinted_or_declared_neutral() -> None:
    fields = set(PredictOptions.model_fields)
    neutral = PredictOptions.neutral_fields()
    carried = set(_job_options().as_options().model_fields_set)  # type: ignore[attr-defined]
    assert not (neutral & (set(PREDICT_RUN_LEVEL) | set(PREDICT_CHANGED))), "both neutral and fingerprinted"
    assert not (carried & set(PREDICT_RUN_LEVEL)), "a run-level field is set from the job's values"
    assert carried - neutral == set(PREDICT_CHANGED), sorted((carried - neutral) ^ set(PREDICT_CHANGED))
    assert fields - neutral == set(PREDICT_RUN_LEVEL) | set(PREDICT_CHANGED), (
        f"declare these predict options output-neutral or let the job carry them: "
        f"{sorted(fields - neutral - set(PREDICT_RUN_LEVEL) - set(PREDICT_CHANGED))}"
    )


def test_each_output_changing_predict_option_changes_the_fingerprinted_options() -> None:
    def part(**changes: object) -> dict:
        model = _job_options(**changes).as_options()  # type: ignore[attr-defined]
        return without(model.model_dump(mode="json"), model.neutral_fields())

    base = part()
    for name, value in PREDICT_CHANGED.items():
        assert part(**{name: value}) != base, name
    neutral = {"memory_mb": 100.0, "batch_size": 2, "threads": 3, "io_threads": 5, "cache_mb": 64}
    assert part(**neutral, device="cpu", overwrite=True) == base


def test_every_embed_option_is_recorded_or_declared_neutral() -> None:
    fields = set(EmbedOptions.model_fields)
    neutral = EmbedOptions.neutral_fields()
    assert not (neutral & set(EMBED_RECORDED)), "an option is both neutral and fingerprinted"
    assert fields - neutral == set(EMBED_RECORDED), sorted(fields - neutral ^ set(EMBED_RECORDED))


def test_predict_records_the_resolved_parameters(make_raster, tmp_path) -> None:
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
    assert set(PREDICT_RESOLVED) <= set(recorded), sorted(set(PREDICT_RESOLVED) - set(recorded))


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
