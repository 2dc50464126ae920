"""A model applied to imagery it was not trained for is an error unless the user says so explicitly."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
from affine import Affine

from rasterlearn.errors import InputError, ModelError
from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.models import ModelMetadata, create_model, load_package, model_spec, save_package
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_package
from tests.logcapture import rasterlearn_logs  # noqa: F401

ENC = "tu-mobilenetv3_small_050"


def _package(folder, bands=3):
    kw = model_spec("unet").tiny_kwargs
    model = create_model("unet", ENC, bands, 2, weights=None, **kw)
    meta = ModelMetadata(
        arch="unet",
        encoder=ENC,
        model_kwargs=kw,
        in_channels=bands,
        num_classes=2,
        bands=["red", "green", "blue"][:bands],
        band_indexes=list(range(1, bands + 1)),
        normalization=Normalization("zscore", (100.0,) * bands, (50.0,) * bands).to_dict(),
        schema=ClassSchema((ClassInfo(0, "bg", "#000000"), ClassInfo(1, "fg", "#ff0000"))).to_dict(),
        chip_size=32,
        gsd=1.0,
        crs_units="metre",
        input_dtype="uint8",
    )
    save_package(model, meta, folder)
    return folder


@pytest.fixture(scope="module")
def rgb_1m(tmp_path_factory):
    return _package(tmp_path_factory.mktemp("pkg") / "rgb_1m")


def _landsat(make_raster, scale=1.0, bands=5):
    rng = np.random.default_rng(0)
    data = (rng.uniform(20, 200, (bands, 48, 48)) * scale).astype("float32")
    return make_raster(data, transform=Affine(28.5, 0, 500_000.0, 0, -28.5, 4_000_000.0), nodata=-9999.0)


def test_cli_rgb_1m_model_on_5_band_float_28m_raster_exits_2(rgb_1m, make_raster, tmp_path, capsys):
    from rasterlearn.cli import main

    r = _landsat(make_raster)
    out = tmp_path / "map.tif"
    rc = main(["predict", str(rgb_1m), str(r), "-o", str(out), "--device", "cpu"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "Traceback" not in err and not out.exists()
    assert "has 5 band(s)" in err and "--bands 1,2,3" in err
    rc = main(["predict", str(rgb_1m), str(r), "-o", str(out), "--device", "cpu", "--bands", "1,2,3"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "28.5" in err and "--allow-resolution-mismatch" in err and not out.exists()


def test_explicit_overrides_run_with_a_logged_warning(rgb_1m, make_raster, tmp_path, caplog):
    r = _landsat(make_raster)
    with caplog.at_level(logging.WARNING):
        res = predict_package(
            rgb_1m, r, tmp_path / "map.tif", bands=[1, 2, 3], allow_resolution_mismatch=True, device="cpu"
        )
    assert "--allow-resolution-mismatch" in caplog.text
    with rasterio.open(res.map_path) as ds:
        assert ds.count == 1 and ds.res == (28.5, 28.5)
        params = json.loads(ds.tags()["parameters"])
    accepted = ["resolution mismatch accepted: 28.5 vs training 1"]
    assert res.parameters["accepted_mismatches"] == accepted and params["accepted_mismatches"] == accepted


def test_values_in_other_units_are_an_error_unless_allowed(rgb_1m, make_raster, tmp_path, caplog):
    r = _landsat(make_raster, scale=1 / 255, bands=3)  # reflectance 0..1 instead of 0..255 digital numbers
    kw = {"allow_resolution_mismatch": True, "device": "cpu"}
    with pytest.raises(InputError, match="--allow-dtype-mismatch"):
        predict_package(rgb_1m, r, tmp_path / "a.tif", **kw)
    with caplog.at_level(logging.WARNING):
        res = predict_package(rgb_1m, r, tmp_path / "b.tif", allow_dtype_mismatch=True, **kw)
    assert "float32 values unlike the uint8 training data" in caplog.text and res.map_path.exists()
    same_units = _landsat(make_raster, bands=3)  # float32 but digital numbers: accepted silently
    assert predict_package(rgb_1m, same_units, tmp_path / "c.tif", **kw).map_path.exists()


def test_package_band_count_disagreeing_with_weights_is_named(tmp_path):
    pkg = _package(tmp_path / "p4", bands=3)
    meta = json.loads((pkg / "model.json").read_text())
    meta.update(in_channels=4, bands=["red", "green", "blue", "nir"])
    meta["normalization"] = Normalization("zscore", (100.0,) * 4, (50.0,) * 4).to_dict()
    (pkg / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"band count \(4\) and its weights \(3 input channels\) disagree"):
        load_package(pkg)
