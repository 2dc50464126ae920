"""Every option either changes the journal fingerprint or is declared output-neutral, once.

Predict's fingerprint holds its options model (:class:`~rasterlearn.options.PredictOptions`, built from the
values the job runs with by :meth:`rasterlearn.predict_options.JobOptions.as_options`) less the
output-neutral fields, plus what the options resolved to (the ``parameters`` tag) and the identities of the
files. Embed's session is hashed from its options model itself (less the output-neutral fields, with the
inputs' resolved values): the tests below check that every other field is in the session's
``parameters.json`` on a real run (and ``tests/test_embed_stage.py`` that changing any one of them, and no
neutral one, changes the session). An option added to a model fails here until it is declared neutral or
reaches the fingerprint, so a changed option can never resume a partial output computed with the old value.
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
# EmbedOptions fields the session records resolved (the rest as given): what each one resolves to
EMBED_RESOLVED = {
    "raster": "the input's identity (path, size, modification time)",
    "bands": "the band indexes",
    "checkpoint": "the file's SHA-256 and size",
    "model_kwargs": "the parsed mapping",
    "aoi": "the extent: a window, a vector file's identity or bounds",
    "stac": "the STAC item's provenance",
    "assets": "the assets stacked",
}
EMBED_ADDED = {"format", "weights_sha256"}  # the session's format, the digest of the weights used


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


def test_embed_resolves_only_options_that_are_fingerprinted() -> None:
    fields = set(EmbedOptions.model_fields)
    neutral = EmbedOptions.neutral_fields()
    assert set(EMBED_RESOLVED) <= fields - neutral, sorted(set(EMBED_RESOLVED) - (fields - neutral))
    assert neutral <= fields, sorted(neutral - fields)


def test_embed_session_records_every_option_but_the_neutral_ones(make_raster, tmp_path) -> None:
    from rasterlearn.embed import run_embed
    from rasterlearn.embed.session import SESSION_FORMAT

    src = make_raster(np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype("uint8"))
    opts = EmbedOptions.model_validate(
        {
            "raster": str(src),
            "model": "resnet18",
            "output": tmp_path / "f.tif",
            "size": 32,
            "no_pretrained": True,
            "layer": 1,
            "bands": "3,1",
            "aoi": "500000,3999000,502000,4000000",
            "cache_dir": tmp_path / "s",
        }
    )
    res = run_embed(opts)
    recorded = json.loads((res.session / "parameters.json").read_text())
    fields = set(EmbedOptions.model_fields)
    assert set(recorded) == (fields - EmbedOptions.neutral_fields()) | EMBED_ADDED | {"session"}
    assert recorded["session"] == res.session_id == res.session.name
    assert (
        recorded["format"] == SESSION_FORMAT
        and recorded["weights_sha256"] == res.parameters["weights_sha256"]
    )
    # resolved values, not the options' text
    assert (
        recorded["raster"]["path"] == str(src.resolve()) and recorded["raster"]["size"] == src.stat().st_size
    )
    assert recorded["bands"] == [3, 1]
    assert recorded["aoi"] == [500000, 3999000, 502000, 4000000]
    assert recorded["model_kwargs"] == {} and recorded["checkpoint"] is None and recorded["stac"] is None
    # as given
    assert (recorded["size"], recorded["layer"], recorded["no_pretrained"], recorded["seed"]) == (
        32,
        1,
        True,
        0,
    )
    assert recorded["stride"] == 32  # the stride the tiles were cut at (default: size)
    assert res.path.exists()
