"""Acceptance tests of embed + reduce/cluster/similarity/classify on ../shared/data, through the CLI contract.

Backbones are random-init checkpoints saved by the tests (no download). The heavier chains are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.cli import main

pytestmark = pytest.mark.realdata


def _checkpoint(tmp: Path, name: str, img_size: int) -> Path:
    import timm
    from safetensors.torch import save_file

    torch_model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0)
    path = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in torch_model.state_dict().items()}, str(path))
    return path


def _cli(*args: object) -> None:
    rc = main([str(a) for a in args])
    assert rc in (0, None), f"rasterlearn {' '.join(map(str, args))} exited with {rc}"


def _embed_args(raster: Path, model: str, ckpt: Path, size: int, stride: int, out: Path, cache: Path) -> list:
    return [
        "embed",
        raster,
        "--model",
        model,
        "--checkpoint",
        ckpt,
        "--size",
        size,
        "--stride",
        stride,
        "-o",
        out,
        "--device",
        "cpu",
        "--batch-size",
        16,
        "--cache-dir",
        cache,
    ]


@pytest.mark.slow
def test_naip_embed_vit_and_dinov2_resume_pca_kmeans(shared_data, tmp_path):
    naip = shared_data / "naip_nd" / "naip_2014_rgbn.tif"
    with rasterio.open(naip) as src:
        src_t, src_crs, (h, w) = src.transform, src.crs, src.shape
        nd_any = (src.read() == 0).all(axis=0)

    # ViT-S/16: 64 px tiles (4x4 patches), no overlap; 4 NAIP bands adapt the 3-band patch embedding
    vit = _checkpoint(tmp_path, "vit_small_patch16_224", 64)
    out16 = tmp_path / "naip_vits16.tif"
    _cli(*_embed_args(naip, "vit_small_patch16_224", vit, 64, 64, out16, tmp_path / "s1"))
    with rasterio.open(out16) as ds:
        assert (ds.count, ds.height, ds.width) == (384, -(-h // 16), -(-w // 16))
        assert ds.crs == src_crs
        assert ds.transform.almost_equals(rasterio.Affine(src_t.a * 16, 0, src_t.c, 0, src_t.e * 16, src_t.f))
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        f16 = ds.read(1)
    assert np.isfinite(f16[:-1, :-1]).mean() > 0.95
    if nd_any.any():  # any fully nodata 16x16 footprint is nodata in the features
        r, c = np.argwhere(nd_any)[0]
        block = nd_any[r // 16 * 16 : (r // 16 + 1) * 16, c // 16 * 16 : (c // 16 + 1) * 16]
        if block.all():
            assert np.isnan(f16[r // 16, c // 16])

    # DINOv2 ViT-S/14 (with 4 register tokens: prefix tokens come from the model), 56 px tiles, stride 28
    dino = _checkpoint(tmp_path, "vit_small_patch14_reg4_dinov2", 56)
    out14 = tmp_path / "naip_dinov2.tif"
    _cli(*_embed_args(naip, "vit_small_patch14_reg4_dinov2", dino, 56, 28, out14, tmp_path / "s2"))
    with rasterio.open(out14) as ds:
        assert (ds.count, ds.height, ds.width) == (384, -(-h // 14), -(-w // 14))
        assert ds.transform.a == pytest.approx(src_t.a * 14) and ds.transform.c == src_t.c
        assert ds.transform.f == src_t.f
        assert ds.tags()["rasterlearn_merge"] == "average"
        assert int(ds.tags()["rasterlearn_input_size"]) == 56

    # resume after SIGKILL: a CLI subprocess with small strips, killed once a strip is committed
    cache = tmp_path / "s3"
    out_k = tmp_path / "naip_killed.tif"
    args = [
        sys.executable,
        "-m",
        "rasterlearn",
        *map(str, _embed_args(naip, "vit_small_patch16_224", vit, 64, 64, out_k, cache)),
        "--memory-mb",
        "0.001",
        "--pause",
        "0.05",
        "--batch-size",
        "4",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.time() + 240
    progress_files: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        progress_files = list(cache.glob("*/.features.tif.progress.json"))
        if progress_files and len(json.loads(progress_files[0].read_text() or "{}").get("done", [])) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the embed subprocess finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out_k.exists()
    done_before = json.loads(progress_files[0].read_text())["done"]
    ((sid, entry),) = json.loads((cache / "index.json").read_text())["sessions"].items()
    assert entry["status"] == "running"
    assert json.loads((cache / sid / "parameters.json").read_text())["size"] == 64
    _cli(*_embed_args(naip, "vit_small_patch16_224", vit, 64, 64, out_k, cache), "--memory-mb", "0.001")
    assert json.loads((cache / "index.json").read_text())["sessions"][sid]["status"] == "complete"
    assert len(done_before) >= 1
    with rasterio.open(out_k) as a, rasterio.open(out16) as b:
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-5, equal_nan=True)

    # PCA -> 3 bands, k-means -> 6 clusters on the DINOv2 features
    pca = tmp_path / "pca.tif"
    _cli("reduce", out14, "--method", "pca", "--components", 3, "-o", pca)
    with rasterio.open(pca) as ds, rasterio.open(out14) as f:
        assert ds.count == 3 and ds.shape == f.shape and ds.transform == f.transform
        evr = json.loads(ds.tags()["rasterlearn_explained_variance_ratio"])
        assert len(evr) == 3 and evr[0] >= evr[1] >= evr[2] > 0
        assert np.array_equal(np.isnan(ds.read(1)), np.isnan(f.read(1)))
    km = tmp_path / "kmeans.tif"
    _cli("cluster", out14, "--method", "kmeans", "--clusters", 6, "-o", km)
    with rasterio.open(km) as ds:
        arr = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
    assert set(np.unique(arr)) - {0} == set(range(1, 7))
    sizes = json.loads((tmp_path / "kmeans.clusters.json").read_text())["pixels_per_cluster"]
    assert sum(sizes.values()) == int((arr > 0).sum())


@pytest.mark.slow
def test_cameroon_embed_similarity_classify(shared_data, tmp_path):
    s2 = shared_data / "cameroon_s2" / "s2_11band.tif"
    vit = _checkpoint(tmp_path, "vit_small_patch16_224", 32)
    feats = tmp_path / "s2_feats.tif"
    _cli(*_embed_args(s2, "vit_small_patch16_224", vit, 32, 32, feats, tmp_path / "sessions"))
    with rasterio.open(s2) as src, rasterio.open(feats) as ds:
        assert ds.count == 384 and (ds.height, ds.width) == (-(-src.height // 16), -(-src.width // 16))
        assert ds.crs == src.crs
        assert json.loads(ds.tags()["rasterlearn_input_bands"]) == [f"band_{i}" for i in range(1, 12)]

    sim = tmp_path / "sim.tif"
    _cli("similarity", feats, "--references", shared_data / "cameroon_s2" / "reference_points.shp", "-o", sim)
    with rasterio.open(sim) as ds:
        s = ds.read(1)
        assert ds.dtypes[0] == "float32" and np.nanmax(s) <= 1.0001 and np.nanmin(s) >= -1.0001
        assert np.isfinite(s).mean() > 0.9

    out = tmp_path / "s2_classes.tif"
    _cli(
        "classify",
        feats,
        "--labels",
        shared_data / "cameroon_s2" / "labelled_polygons.shp",
        "--attribute",
        "Type",
        "--cv",
        "spatial",
        "-o",
        out,
        "--params",
        '{"n_estimators": 30}',
    )
    metrics = json.loads((tmp_path / "s2_classes.metrics.json").read_text())
    assert metrics["validation"]["type"] == "spatial"
    # each class of these polygons lies in one spatial block: no spatial fold can test a class it trained
    # on, so classify says validation is impossible and reports no headline metric (not a fake accuracy)
    assert metrics["validation"]["valid"] is False
    assert sorted(metrics["validation"]["unvalidated_classes"]) == ["dense_forest", "open", "river"]
    assert "overall_accuracy" not in metrics and len(metrics["folds"]) == 3
    with rasterio.open(out) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 2, 3}
    assert "dense_forest" in (tmp_path / "s2_classes.tif.aux.xml").read_text()


def test_cameroon_raw_bands_similarity_and_classify(shared_data, tmp_path):
    """The analysis stages on raw 11-band imagery (not only feature rasters); labels in EPSG:4326."""
    s2 = shared_data / "cameroon_s2" / "s2_11band.tif"
    sim = tmp_path / "sim_raw.tif"
    _cli(
        "similarity",
        s2,
        "--references",
        shared_data / "cameroon_s2" / "reference_points.shp",
        "-o",
        sim,
        "--standardize",
    )
    with rasterio.open(sim) as ds, rasterio.open(s2) as src:
        assert ds.shape == src.shape and ds.transform == src.transform
    out = tmp_path / "pts.tif"
    _cli(
        "classify",
        s2,
        "--labels",
        shared_data / "cameroon_s2" / "labelled_points.shp",
        "--attribute",
        "Type",
        "-o",
        out,
        "--folds",
        3,
        "--params",
        '{"n_estimators": 30}',
    )
    m = json.loads((tmp_path / "pts.metrics.json").read_text())
    assert m["validation"]["type"] == "spatial" and m["samples"] == 23  # 4 of the 27 points lie outside
    assert m["overall_accuracy"] > 0.7


def test_landcover_classify_raw_landsat_against_landclass(shared_data, tmp_path):
    d = shared_data / "landcover_nc"
    out = tmp_path / "lc.tif"
    _cli(
        "classify",
        d / "landsat7_5band.tif",
        "--labels",
        d / "training_points.shp",
        "--attribute",
        "label",
        "-o",
        out,
        "--params",
        '{"n_estimators": 60}',
    )
    m = json.loads((tmp_path / "lc.metrics.json").read_text())
    assert (
        m["validation"]["type"] == "spatial" and m["samples"] > 700
    )  # 885 points inside the frame, some on its nodata edge
    assert len(m["classes"]) == 7 and m["overall_accuracy"] > 0.4

    # full-scene agreement with the 1996 land-class raster through the full-scene evaluation: its codes
    # (1 developed .. 7 sediment, float32, nodata -99999) are matched to the map's classes (codes from the
    # sorted label names) by name; its CRS is declared EPSG:3358 while the map carries Landsat's unnamed
    # description of the same projection on the same grid, so it is read as is, not resampled.
    metrics_path = tmp_path / "lc.scene.json"
    _cli(
        "evaluate",
        out,
        "--truth",
        d / "landclass_7.tif",
        "--truth-names",
        "1=developed,2=agriculture,3=herbaceous,4=shrubland,5=forest,6=water,7=sediment",
        "-o",
        metrics_path,
    )
    scene = json.loads(metrics_path.read_text())
    ev = scene["evaluation"]
    assert ev["class_match"] == "name" and ev["truth_reprojected"] is False and ev["truth_crs_differs"]
    assert {v["name"]: v["map_name"] for v in ev["truth_classes"].values()} == {
        n: n for n in ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment")
    }
    assert list(scene["per_class"]) == sorted(m["classes"])  # the map's own classes, in its code order
    assert ev["truth_pixels_unknown_class"] == 0 and ev["truth_pixels_non_integer"] == 0
    with rasterio.open(out) as p, rasterio.open(d / "landclass_7.tif") as t:
        both = (p.read(1) != p.nodata) & (t.read_masks(1) > 0)
    assert scene["pixels"] == int(both.sum()) > 100_000
    assert (metrics_path.with_suffix(".csv")).exists() and (metrics_path.with_suffix(".png")).exists()
    # labels are from 1996, imagery from 2000: agreement is well above chance (1/7) but far from perfect;
    # a measured run gave overall accuracy 0.636 and kappa 0.417 over 183,417 pixels
    assert scene["overall_accuracy"] > 0.55 and scene["kappa"] > 0.33
    assert scene["per_class"]["forest"]["f1"] > 0.6 and scene["per_class"]["developed"]["f1"] > 0.4
