"""No tracebacks, no silently wrong data: every failure found by trying the tools as users would."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, box

from rasterlearn.cli import main
from rasterlearn.errors import ConfigError, CRSError, InputError, ModelError, ReadError
from rasterlearn.io.raster import RasterReader
from tests.conftest import write_tif
from tests.test_safety import two_band_meta

UTM = "EPSG:32633"


def _labels(path: Path, crs: str = UTM) -> Path:
    gdf = gpd.GeoDataFrame(
        {"cls": ["a", "b", "a", "b"]},
        geometry=[
            box(500_000, 3_999_000, 500_300, 3_999_300),
            box(500_400, 3_999_000, 500_700, 3_999_300),
            box(500_000, 3_998_800, 500_300, 3_998_950),
            box(500_400, 3_998_800, 500_700, 3_998_950),
        ],
        crs=crs,
    )
    gdf.to_file(path)
    return path


def _truncated(path: Path, data: np.ndarray, seed: int) -> Path:
    """A tiled, compressed GeoTIFF cut off at a random point past its header: some windows fail to read."""
    write_tif(path, data, tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    size = path.stat().st_size
    cut = int(size * np.random.default_rng(seed).uniform(0.45, 0.8))
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    img = (rng.random((3, 96, 96)) * 1000).astype("uint16")
    classes = rng.integers(1, 3, (96, 96)).astype("uint8")
    return {
        "img": _truncated(tmp_path / "img.tif", img, seed=1),
        "map": _truncated(tmp_path / "map.tif", classes, seed=2),
        "labels": _labels(tmp_path / "labels.gpkg"),
    }


STAGES = {
    "reduce": "reduce {img} -o {tmp}/o.tif",
    "cluster": "cluster {img} --clusters 2 -o {tmp}/o.tif",
    "similarity": "similarity {img} -r {labels} -o {tmp}/o.tif",
    "classify": "classify {img} -l {labels} -a cls --cv none -o {tmp}/o.tif",
    "embed": "embed {img} --model resnet18 --no-pretrained --size 32 -o {tmp}/o.tif",
    "evaluate": "evaluate {map} --truth {labels} --attribute cls -o {tmp}/o.json",
    "vectorize": "vectorize {map} -o {tmp}/o.gpkg",
    "chips": "chips -r {img} -l {labels} -a cls --size 16 -o {tmp}/chips",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_corrupt_raster_read_mid_job_is_one_line_naming_file_and_window(capsys, scene, tmp_path, stage):
    code = main(STAGES[stage].format(tmp=tmp_path, **scene).split())
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("Error:") == 1
    flat = " ".join(err.split())
    assert "gdalinfo -checksum" in flat and "rows" in flat and "columns" in flat
    assert ("img.tif" in flat) or ("map.tif" in flat)


def test_predict_on_a_corrupt_raster_is_one_read_error(tmp_path):
    torch = pytest.importorskip("torch")
    from rasterlearn.labels import ClassSchema
    from rasterlearn.models import ModelMetadata
    from rasterlearn.normalize import Normalization
    from rasterlearn.predict import predict_raster

    img = _truncated(
        tmp_path / "img.tif", (np.random.default_rng(0).random((2, 96, 96)) * 200).astype("uint16"), 3
    )
    meta = ModelMetadata(
        arch="x",
        encoder="x",
        in_channels=2,
        num_classes=3,
        bands=["band_1", "band_2"],
        normalization=Normalization("zscore", (100.0, 100.0), (50.0, 50.0)).to_dict(),
        schema=ClassSchema.infer([1, 2]).to_dict(),
        chip_size=32,
    )
    with pytest.raises(ReadError, match="gdalinfo -checksum"):
        predict_raster(torch.nn.Conv2d(2, 3, 1), meta, img, tmp_path / "o.tif", blocksize=16, threads=1)


def test_south_up_raster_is_refused_with_the_fix(tmp_path, capsys):
    path = write_tif(
        tmp_path / "south.tif",
        np.zeros((2, 8, 8), "uint8"),
        transform=Affine(10, 0, 500_000, 0, 10, 3_999_000),
    )
    with pytest.raises(InputError, match=r"south-up.*gdalwarp"):
        RasterReader(path)
    assert RasterReader(path, south_up_ok=True).grid.transform.e == 10  # info still describes it
    plain = write_tif(
        tmp_path / "plain.tif", np.zeros((1, 4, 4), "uint8"), crs=None, transform=Affine.identity()
    )
    assert RasterReader(plain).grid.height == 4  # no georeferencing (identity transform) is not south-up
    assert main(["cluster", str(path), "--clusters", "2", "-o", str(tmp_path / "c.tif")]) == 2
    assert "south-up" in capsys.readouterr().err


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    return write_tif(tmp_path / "img.tif", (rng.normal(0, 1, (3, 32, 32))).astype("float32"))


def test_zero_clusters_is_validated_up_front(capsys, image, tmp_path):
    assert main(["cluster", str(image), "--clusters", "0", "-o", str(tmp_path / "c.tif")]) == 2
    err = capsys.readouterr().err
    assert "at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "c.model").exists()


def test_estimator_errors_are_one_line(capsys, image, tmp_path):
    """NMF on standardized data (negative values) fails inside scikit-learn: one wrapped line with a hint."""
    assert main(["reduce", str(image), "--method", "NMF", "-k", "2", "-o", str(tmp_path / "r.tif")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "NMF(" in err and "negative" in err and "--no-standardize" in err and "Traceback" not in err
    assert not (tmp_path / "r.tif").exists() and not (tmp_path / "r.model").exists()


@pytest.mark.parametrize("method", ["os.system", "builtins.eval", "subprocess.Popen", "sklearn.utils.Bunch"])
def test_method_names_are_restricted_to_estimators_of_allowed_modules(method):
    from rasterlearn.features._io import resolve_estimator

    with pytest.raises(ConfigError, match="estimator"):
        resolve_estimator(method, ["sklearn.cluster"], {})
    assert resolve_estimator("sklearn.decomposition.NMF", [], {}).__name__ == "NMF"


def test_pickled_model_folders_need_trust_model(capsys, image, tmp_path):
    out = tmp_path / "iso.tif"
    args = ["reduce", str(image), "--method", "isomap", "-k", "2", "--sample-size", "200"]
    assert main([*args, "-o", str(out)]) == 0
    model = tmp_path / "iso.model"
    assert (model / "estimator.pkl").exists()
    again = ["reduce", str(image), "--model", str(model), "-o", str(tmp_path / "b.tif")]
    assert main(again) == 2
    assert "--trust-model" in capsys.readouterr().err
    assert main([*again, "--trust-model"]) == 0
    with pytest.raises(ModelError, match="pickled"):
        from rasterlearn.features.reduce import FittedReducer

        FittedReducer.load(model)


@pytest.mark.parametrize("command", ["chips", "train", "run"])
def test_yaml_with_python_tags_is_one_clear_error(capsys, tmp_path, command):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("size: !!python/object/apply:os.system ['echo pwned']\n")
    args = {
        "chips": ["chips", "--config", str(cfg), "-o", str(tmp_path / "c")],
        "train": ["train", str(tmp_path), "-o", str(tmp_path / "t"), "--config", str(cfg)],
        "run": ["run", str(cfg)],
    }[command]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Python tags" in err and "evil.yaml" in err and "Traceback" not in err


def test_several_vector_layers_without_layer_are_refused(tmp_path):
    from rasterlearn.io.vector import read_vector

    path = _labels(tmp_path / "two.gpkg")
    gpd.GeoDataFrame({"x": [1]}, geometry=[box(0, 0, 1, 1)], crs=UTM).to_file(path, layer="other")
    with pytest.raises(InputError, match=r"2 layers \('two', 'other'\).*--layer"):
        read_vector(path)
    assert len(read_vector(path, layer="other")) == 1


def test_a_data_layer_plus_qgis_styles_is_used_with_one_log_line(tmp_path, caplog):
    import sqlite3

    from rasterlearn.io.vector import read_vector

    path = _labels(tmp_path / "styled.gpkg")
    with sqlite3.connect(path) as db:  # QGIS's style table: no geometry, registered as attributes
        db.execute("CREATE TABLE layer_styles (id INTEGER PRIMARY KEY, styleName TEXT)")
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles')"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyogrio's "More than one layer found" would fail here
        caplog.set_level(logging.INFO, logger="rasterlearn")
        gdf = read_vector(path)
    assert len(gdf) == 4
    assert "2 layers: 'styled' used, 'layer_styles' ignored" in caplog.text


def test_a_wrong_declared_crs_says_so_with_raw_bounds(tmp_path):
    from rasterlearn.io.vector import read_vector

    path = tmp_path / "wrong.gpkg"
    gpd.GeoDataFrame(geometry=[box(500_000, 3_999_000, 500_300, 3_999_300)], crs="EPSG:4326").to_file(path)
    with pytest.raises(CRSError) as info:
        read_vector(path, crs=UTM)
    msg = str(info.value)
    assert "no finite coordinates" in msg and "declared CRS is likely wrong" in msg
    assert "(500000, 3.999e+06, 500300, 3.9993e+06)" in msg and "inf" not in msg.replace("info", "")
    assert msg.count(str(path)) == 1


def test_empty_geometries_skipped_by_rasterize_are_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="rasterlearn")
    from rasterlearn.grid import Grid, Window
    from rasterlearn.labels import rasterize_window

    grid = Grid(8, 8, Affine(1, 0, 0, 0, -1, 8), UTM)
    degenerate = Polygon()  # rasterio skips it with a ShapeSkipWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rasterize_window(
            [box(0, 0, 4, 8), degenerate], [1, 2], grid, Window(0, 0, 8, 8), fill=0, dtype="uint8"
        )
    assert out[:, :4].min() == 1 and out[:, 4:].max() == 0
    assert "1 feature with empty geometry skipped" in caplog.text


def test_lightning_banner_and_notices_are_silenced(tmp_path, capfd):
    pytest.importorskip("lightning")
    from rasterlearn.cli._app import setup_logging
    from rasterlearn.train import TrainConfig, make_trainer

    setup_logging(0, False)
    make_trainer(TrainConfig(accelerator="cpu", limit_train_batches=1.0), tmp_path)
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert "GPU available" not in text and "Tip" not in text and "limit_train_batches" not in text


def test_quiet_prints_errors_only_and_is_accepted_after_the_command(capsys, image, tmp_path):
    assert main(["-q", "reduce", str(image), "-o", str(tmp_path / "r.tif")]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    classes = write_tif(tmp_path / "map.tif", np.repeat(np.arange(2, dtype="uint8"), 8)[None].repeat(16, 0))
    assert main(["vectorize", str(classes), "-o", str(tmp_path / "p.gpkg"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    assert main(["reduce", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x.tif"), "-q"]) == 2
    assert "missing.tif" in capsys.readouterr().err


def test_predict_progress_moves_before_the_first_block_is_written(tmp_path):
    torch = pytest.importorskip("torch")
    from rasterlearn.predict import predict_raster

    img = write_tif(tmp_path / "img.tif", np.ones((2, 160, 48), "uint16"))
    meta = two_band_meta()
    calls: list[int] = []
    predict_raster(
        torch.nn.Conv2d(2, 3, 1),
        meta,
        img,
        tmp_path / "o.tif",
        progress=calls.append,
        threads=1,
        window=32,
        batch_size=2,
    )
    assert sum(calls) == 160 * 48
    assert len(calls) >= 5 and calls[0] < 160 * 48 // 2  # one 512-px block, yet progress moves row by row


def test_embed_models_names_are_never_truncated(capsys, monkeypatch):
    from rasterlearn.cli._app import console
    from rasterlearn.embed import RECOMMENDED_MODELS

    monkeypatch.setattr(console, "_width", 80)
    assert main(["embed-models"]) == 0
    err = capsys.readouterr().err
    for name in RECOMMENDED_MODELS:
        assert name in err
    assert "…" not in err  # nothing is cut short, not even the headers


def test_chips_help_shows_defaults_without_stray_spaces(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["chips", "--help"]) == 0
    text = capsys.readouterr().out
    assert "[default: 256]" in text and "[default: 0.15]" in text  # read from ChipsOptions
    assert " ." not in text.replace(" ...", "")


def test_chips_from_a_source_with_several_layers_needs_layer(capsys, tmp_path):
    img = write_tif(
        tmp_path / "img.tif", (np.random.default_rng(0).random((3, 96, 96)) * 100).astype("uint8")
    )
    path = _labels(tmp_path / "two.gpkg")
    gdf = gpd.read_file(path)
    gdf["cls"] = "c"
    gdf.to_file(path, layer="other")
    code = main(
        ["chips", "-r", str(img), "-l", str(path), "-a", "cls", "--size", "16", "-o", str(tmp_path / "c")]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "'two', 'other'" in err and "--layer" in err, err
    assert not (tmp_path / "c").exists()


def test_no_overlap_from_a_wrong_declared_crs_shows_the_layers_own_bounds(capsys, tmp_path):
    img = write_tif(
        tmp_path / "img.tif", (np.random.default_rng(0).random((3, 64, 64)) * 100).astype("uint8")
    )
    labels = _labels(tmp_path / "wrong.gpkg", crs="EPSG:4326")  # UTM numbers declared as degrees
    code = main(
        ["chips", "-r", str(img), "-l", str(labels), "-a", "cls", "--size", "16", "-o", str(tmp_path / "c")]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "do not overlap" in err
    assert "whole layer spans (500000, 3.9988e+06, 500700, 3.9993e+06) in its declared EPSG:4326" in err, err
    assert "np.float64" not in err and err.count(str(labels)) == 1
