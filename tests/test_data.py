"""Chip dataset: normalization from dataset.json, nodata -> ignore, code mapping, joint augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from rasterlearn.data import (
    AugmentConfig,
    ChipDataset,
    EpochSampler,
    JointAugment,
    augment_preset,
    load_dataset_info,
)
from rasterlearn.errors import EmptyInputError, InputError, InputNotFoundError, ReadError
from rasterlearn.normalize import Normalization
from tests.chipdata import write_chip_dataset


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chip_dataset(tmp_path_factory.mktemp("chips") / "d", n_per_split=(3, 2, 0), codes=(0, 3, 7))


def test_item_normalized_with_dataset_stats_and_nodata_ignored(chips):
    ds = ChipDataset(chips, "trn")
    assert len(ds) == 3 and ds.in_channels == 3
    item = ds[0]
    img, mask = item["image"], item["mask"]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32)
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    with rasterio.open(chips / ds.rows[0]["image"]) as src:
        raw = src.read().astype("float64")
    meta = json.loads((chips / "dataset.json").read_text())
    norm = Normalization.from_dict(meta["normalization"])
    expected = (raw[:, 10, 10] - np.array(norm.offset)) / np.array(norm.scale)
    assert np.allclose(img[:, 10, 10].numpy(), expected, atol=1e-4)
    # nodata corner (raw == 0) -> fill 0 in the image and ignore in the target
    assert (raw[:, :4, :4] == 0).all()
    assert (img[:, :4, :4] == 0).all() and (mask[:4, :4] == 255).all()
    # non-contiguous codes 0, 3, 7 -> indices 0, 1, 2
    with rasterio.open(chips / ds.rows[0]["mask"]) as src:
        codes = src.read(1)
    valid = codes != 255
    lut = {0: 0, 3: 1, 7: 2}
    assert np.array_equal(mask.numpy()[valid], np.vectorize(lut.get)(codes[valid]))
    assert set(np.unique(mask.numpy())) <= {0, 1, 2, 255}


def test_class_counts_and_info(chips):
    ds = ChipDataset(chips, "trn")
    counts = ds.class_counts()
    assert counts.shape == (3,) and counts.sum() > 0
    info = load_dataset_info(chips)
    assert info.bands == ["band_1", "band_2", "band_3"] and info.chip_size == 32 and info.gsd == 10.0
    assert info.normalization_for("percentile").method == "percentile"


def test_errors(chips, tmp_path):
    with pytest.raises(EmptyInputError, match="no chips in split 'tst'"):
        ChipDataset(chips, "tst")
    with pytest.raises(InputNotFoundError, match=r"dataset\.json"):
        ChipDataset(tmp_path, "trn")
    with pytest.raises(InputError, match="split must be"):
        ChipDataset(chips, "train")
    with pytest.raises(InputError, match="bands"):
        ChipDataset(chips, "trn", normalization=Normalization.identity(2))


def _coord_pair(c: int = 13, size: int = 16):
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    code = (rows * size + cols).float()
    image = code.expand(c, size, size).clone()
    return image, (rows * size + cols).long()


@pytest.mark.parametrize("field", ["p_hflip", "p_vflip", "p_rot90"])
def test_geometric_transforms_keep_image_and_mask_aligned(field):
    cfg = AugmentConfig(**{"p_hflip": 0.0, "p_vflip": 0.0, "p_rot90": 0.0, field: 1.0})
    image, mask = _coord_pair()
    out_img, out_mask = JointAugment(cfg, ignore_index=-1)(image, mask, torch.Generator().manual_seed(3))
    assert out_img.shape == (13, 16, 16)
    assert not torch.equal(out_mask, mask)
    assert torch.equal(out_img[5].long(), out_mask)


def test_rotation_and_crop_nearest_mask_ignore_fill():
    cfg = AugmentConfig(p_hflip=0, p_vflip=0, p_rot90=0, p_rotate=1.0, rotate_degrees=45, p_resized_crop=1.0)
    image = torch.randn(13, 32, 32)
    mask = torch.randint(0, 3, (32, 32))
    for seed in range(3):
        img, m = JointAugment(cfg, ignore_index=255)(image, mask, torch.Generator().manual_seed(seed))
        assert img.shape == (13, 32, 32) and m.dtype == torch.int64
        assert set(m.unique().tolist()) <= {0, 1, 2, 255}  # nearest: no blended class values
    cfg = AugmentConfig(p_hflip=0, p_vflip=0, p_rot90=0, p_rotate=1.0, rotate_degrees=45)
    g = torch.Generator().manual_seed(0)
    while True:  # draw until the angle is large enough to leave corners outside the source
        _, m = JointAugment(cfg, ignore_index=255)(image, mask, g)
        if (m == 255).any():
            break
    assert m[0, 0] == 255 or m[0, -1] == 255 or m[-1, 0] == 255 or m[-1, -1] == 255


def test_radiometric_per_band_switch_and_determinism():
    cfg = augment_preset("full").model_copy(
        update={
            "p_brightness": 1.0,
            "p_noise": 1.0,
            "radiometric_bands": [0, 2],
            "p_hflip": 0,
            "p_vflip": 0,
            "p_rot90": 0,
            "p_rotate": 0,
            "p_resized_crop": 0,
        }
    )
    image, mask = torch.zeros(4, 16, 16), torch.zeros(16, 16, dtype=torch.long)
    aug = JointAugment(cfg)
    a, _ = aug(image, mask, torch.Generator().manual_seed(5))
    b, _ = aug(image, mask, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a[0].abs().sum() > 0 and a[2].abs().sum() > 0
    assert torch.equal(a[1], image[1]) and torch.equal(a[3], image[3])
    assert not augment_preset("none").enabled and augment_preset("flips").enabled


def test_epoch_sampler_reproducible_and_epoch_dependent(chips):
    s = EpochSampler(10, seed=1)
    first = list(s)
    assert sorted(i for i, _ in first) == list(range(10))
    assert list(EpochSampler(10, seed=1)) == first
    s.set_epoch(1)
    assert list(s) != first
    ds = ChipDataset(chips, "trn", augment=augment_preset("full"))
    x1, x2 = ds[(0, 123)], ds[(0, 123)]
    assert torch.equal(x1["image"], x2["image"]) and torch.equal(x1["mask"], x2["mask"])


def _items(ds, keys):
    return [ds[k] for k in keys]


def test_chip_cache_serves_identical_items_without_touching_disk(tmp_path):
    root = write_chip_dataset(tmp_path / "c", n_per_split=(4, 0, 0), codes=(0, 3, 7))
    keys = [(i, 1000 + i) for i in range(4)]
    plain = ChipDataset(root, "trn", augment=augment_preset("full"), cache_mb=0)
    cached = ChipDataset(root, "trn", augment=augment_preset("full"))
    assert not plain.cache_enabled and cached.cache_enabled
    assert cached.estimated_bytes() > 4 * 3 * 32 * 32 * 2
    first = _items(cached, keys)
    assert cached.cached == 4 and plain.cached == 0
    for f in (root / "images").iterdir():  # served from memory from now on
        f.unlink()
    again = _items(cached, keys)
    expect = [
        ChipDataset(
            write_chip_dataset(tmp_path / "d", n_per_split=(4, 0, 0), codes=(0, 3, 7)),
            "trn",
            augment=augment_preset("full"),
            cache_mb=0,
        )[k]
        for k in keys
    ]
    for a, b, e in zip(first, again, expect, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["image"], e["image"]) and torch.equal(a["mask"], e["mask"])
    data, valid, codes = cached.read(0)
    assert not data.flags.writeable and not valid.flags.writeable and not codes.flags.writeable
    with pytest.raises(ReadError, match="Cannot read chip"):
        ChipDataset(root, "trn", cache_mb=0)[0]  # image files are gone: the uncached dataset must fail


def test_chip_cache_budget_and_preload(tmp_path):
    root = write_chip_dataset(tmp_path / "c", n_per_split=(6, 0, 0))
    small = ChipDataset(root, "trn", cache_mb=0.01)  # 6 chips of 32 px x 3 bands uint16 > 10 kB
    assert not small.cache_enabled
    small[0]
    assert small.cached == 0 and small.preload() == 0
    ds = ChipDataset(root, "trn")
    assert ds.preload(threads=2) == 6 and ds.cached == 6


@pytest.mark.parametrize("kind", ["nodata", "nan", "internal_mask", "none"])
def test_validity_matches_gdal_masks(tmp_path, kind):
    root = write_chip_dataset(tmp_path / "c", n_per_split=(1, 0, 0), bands=2, size=16)
    ds = ChipDataset(root, "trn", cache_mb=0)
    path = root / ds.rows[0]["image"]
    data = np.full((2, 16, 16), 500, dtype="float32" if kind == "nan" else "uint16")
    invalid = np.zeros((16, 16), bool)
    invalid[2:5, 3:9] = True
    invalid[10, 10] = True
    with rasterio.open(path) as src:
        prof = src.profile
    prof.update(dtype=data.dtype.name, nodata=None)
    if kind == "nodata":
        prof["nodata"] = 7
        data[0][invalid] = 7  # one band at nodata is enough to make the pixel invalid
        data[1, 0, 0] = 7
        invalid[0, 0] = True
    elif kind == "nan":
        prof["nodata"] = float("nan")
        data[1][invalid] = np.nan
    path.unlink()
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        if kind == "internal_mask":
            dst.write_mask(np.where(invalid, 0, 255).astype("uint8"))
    if kind == "none":
        invalid[:] = False
    with rasterio.open(path) as src:
        gdal_valid = (src.read_masks() > 0).all(axis=0)
    _, valid, _ = ds.read(0)
    assert np.array_equal(valid, ~invalid)
    assert np.array_equal(valid, gdal_valid)


def test_default_workers_by_device_and_cores():
    from rasterlearn.data import default_workers

    assert default_workers("cpu", 2) == 0 and default_workers("cpu", 4) == 0  # load in the main process
    assert default_workers("cpu", 16) == 3 and default_workers("cpu", 64) == 4
    assert (
        default_workers("gpu", 2) == 1 and default_workers("gpu", 16) == 8 and default_workers("gpu", 1) == 0
    )
    assert default_workers() >= 0
