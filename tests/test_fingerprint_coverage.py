"""Every option either changes the journal fingerprint or is declared output-neutral, once.

Predict builds its fingerprint from the parameters it records (``parameters`` tag): the table below holds that
record and the options model's ``output_neutral`` declaration together, so an option added to the model fails
here until it is declared neutral or recorded. Embed's session is hashed from its options model itself (less
the output-neutral fields, with the inputs' resolved values): the tests below check that every other field is
in the session's ``parameters.json`` on a real run, and that changing any one of them (and no neutral one)
changes the session (``tests/test_embed_stage.py``), so a changed option can never resume a partial output
computed with the old value.
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


def test_every_predict_option_is_recorded_or_declared_neutral() -> None:
    fields = set(PredictOptions.model_fields)
    neutral = PredictOptions.neutral_fields()
    assert not (neutral & set(PREDICT_RECORDED)), "an option is both neutral and fingerprinted"
    assert fields - neutral == set(PREDICT_RECORDED), (
        f"declare these predict options output-neutral or record them: {sorted(fields - neutral - set(PREDICT_RECORDED))}; "
        f"no longer options: {sorted(set(PREDICT_RECORDED) - fields)}"
    )


def test_embed_resolves_only_options_that_are_fingerprinted() -> None:
    fields = set(EmbedOptions.model_fields)
    neutral = EmbedOptions.neutral_fields()
    assert set(EMBED_RESOLVED) <= fields - neutral, sorted(set(EMBED_RESOLVED) - (fields - neutral))
    assert neutral <= fields, sorted(neutral - fields)


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
