"""Torch datasets over chip folders written by ``rasterlearn chips``, and joint image+mask augmentation.

A chip folder holds ``images/<id>.tif`` (source dtype, source nodata), ``masks/<id>.tif`` (class codes,
nodata = the schema's ignore code), ``manifest.csv`` (one row per chip, with its split and ``px_<code>``
class pixel counts) and ``dataset.json`` (bands, class schema, training-split statistics and the
normalization derived from them). :class:`ChipDataset` reads one split and returns normalized float32
images and int64 targets of contiguous class indices; image nodata becomes the ignore index in the target
so nodata never counts in a loss or a metric. Data are never divided by 255: the normalization comes from
the statistics.

Augmentation (:class:`JointAugment`) transforms image and mask together and works for any band count:
geometric transforms use ``torchvision.transforms.v2.functional`` (bilinear for the image, nearest for the
mask, filled with the ignore index outside the source), radiometric ones act per band (switchable per band).
Randomness is drawn from a per-sample seed given by :class:`EpochSampler`, so an epoch is reproducible
whatever the number of workers and after a resume.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset, Sampler

from rasterlearn.errors import ConfigError, EmptyInputError, InputError, InputNotFoundError, ReadError
from rasterlearn.io.validity import block_validity
from rasterlearn.labels import ClassSchema
from rasterlearn.normalize import Normalization, NormalizationMethod

__all__ = [
    "AugmentConfig",
    "ChipDataset",
    "DatasetInfo",
    "EpochSampler",
    "JointAugment",
    "augment_preset",
    "default_workers",
    "load_dataset_info",
    "read_manifest",
]

log = logging.getLogger(__name__)

SPLITS = ("trn", "val", "tst")
Split = Literal["trn", "val", "tst"]


# ---------------------------------------------------------------------------------------------------
# dataset.json and manifest.csv
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """The parts of ``dataset.json`` that training and evaluation need (``raw`` keeps everything)."""

    root: Path
    bands: list[str]
    band_indexes: list[int] | None
    schema: ClassSchema
    normalization: Normalization
    statistics: list[dict[str, Any]]
    chip_size: int
    dtype: str | None
    nodata: float | None
    resolution: tuple[float, float] | None
    crs_units: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def gsd(self) -> float | None:
        return None if not self.resolution else float(abs(self.resolution[0]))

    def normalization_for(
        self, method: NormalizationMethod | Literal["dataset"] = "dataset"
    ) -> Normalization:
        """The dataset's normalization, or one of another method computed from its statistics."""
        if method == "dataset":
            return self.normalization
        if not self.statistics:
            raise InputError(f"{self.root}/dataset.json has no band statistics for {method!r} normalization")
        return Normalization.from_stats(self.statistics, method)


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read ``DIR/dataset.json`` (format ``rasterlearn-chips/1``) with clear errors."""
    root = Path(root)
    path = root / "dataset.json"
    if not root.is_dir():
        raise InputNotFoundError(
            f"Chip dataset folder not found: {root} (create it with 'rasterlearn chips')"
        )
    if not path.exists():
        raise InputNotFoundError(
            f"{root} has no dataset.json; is it a folder written by 'rasterlearn chips'?"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReadError(f"{path} is not valid JSON: {exc}") from exc
    fmt = str(raw.get("format", ""))
    if not fmt.startswith("rasterlearn-chips/"):
        raise InputError(f"{path} has format {fmt!r}; expected 'rasterlearn-chips/1'")
    missing = [k for k in ("bands", "schema", "chip_size") if k not in raw]
    if missing:
        raise InputError(f"{path} lacks {missing}; re-create the chips with 'rasterlearn chips'")
    schema = ClassSchema.from_dict(raw["schema"])
    stats = list(raw.get("statistics") or [])
    if raw.get("normalization"):
        norm = Normalization.from_dict(raw["normalization"])
    elif stats:
        norm = Normalization.from_stats(stats, "zscore")
    else:
        raise InputError(f"{path} has neither 'normalization' nor 'statistics'; cannot normalize the bands")
    if norm.bands != len(raw["bands"]):
        raise InputError(
            f"{path}: normalization has {norm.bands} bands but 'bands' lists {len(raw['bands'])}"
        )
    res = raw.get("resolution")
    return DatasetInfo(
        root=root,
        bands=[str(b) for b in raw["bands"]],
        band_indexes=raw.get("band_indexes"),
        schema=schema,
        normalization=norm,
        statistics=stats,
        chip_size=int(raw["chip_size"]),
        dtype=raw.get("dtype"),
        nodata=raw.get("nodata"),
        resolution=(float(res[0]), float(res[1])) if res else None,
        crs_units=raw.get("crs_units"),
        raw=raw,
    )


def read_manifest(root: str | Path, split: str | None = None) -> list[dict[str, str]]:
    """Rows of ``DIR/manifest.csv`` (as strings), optionally of one split."""
    path = Path(root) / "manifest.csv"
    if not path.exists():
        raise InputNotFoundError(
            f"{Path(root)} has no manifest.csv; is it a folder written by 'rasterlearn chips'?"
        )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"chip_id", "image", "mask", "split"}
    if rows and not need <= set(rows[0]):
        raise InputError(f"{path} lacks columns {sorted(need - set(rows[0]))}")
    if split is None:
        return rows
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return [r for r in rows if r["split"] == split]


def class_pixel_counts(rows: Sequence[Mapping[str, str]], schema: ClassSchema) -> np.ndarray:
    """Per-class pixel counts (schema order) summed over manifest rows' ``px_<code>`` columns."""
    out = np.zeros(schema.num_classes, dtype="float64")
    for i, code in enumerate(schema.codes):
        col = f"px_{code}"
        out[i] = sum(float(r.get(col) or 0) for r in rows)
    return out


# ---------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------
class AugmentConfig(BaseModel):
    """Joint augmentation settings; each ``p_*`` is the probability of that transform per sample.

    Radiometric transforms act in normalized units (one unit = one band standard deviation for zscore).
    """

    model_config = ConfigDict(extra="forbid")

    p_hflip: float = Field(0.5, ge=0, le=1)
    p_vflip: float = Field(0.5, ge=0, le=1)
    p_rot90: float = Field(0.5, ge=0, le=1, description="rotation by a random multiple of 90 degrees")
    p_rotate: float = Field(
        0.0, ge=0, le=1, description="arbitrary rotation (mask nearest, outside = ignore)"
    )
    rotate_degrees: float = Field(30.0, ge=0, le=180)
    p_resized_crop: float = Field(0.0, ge=0, le=1)
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    p_brightness: float = Field(0.0, ge=0, le=1)
    brightness: float = Field(0.2, ge=0, description="max per-band offset")
    p_contrast: float = Field(0.0, ge=0, le=1)
    contrast: tuple[float, float] = (0.8, 1.2)
    p_noise: float = Field(0.0, ge=0, le=1)
    noise_std: float = Field(0.05, ge=0)
    p_blur: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    radiometric_bands: list[int] | None = Field(
        None, description="0-based bands radiometric transforms touch"
    )

    @property
    def enabled(self) -> bool:
        return any(v > 0 for k, v in self.model_dump().items() if k.startswith("p_"))


def augment_preset(name: Literal["none", "flips", "geometric", "full"]) -> AugmentConfig:
    """``none``; ``flips`` (flips + 90° rotations, the default); ``geometric`` (+ rotation, resized crop);
    ``full`` (+ per-band brightness/contrast, noise, blur)."""
    zero = {"p_hflip": 0.0, "p_vflip": 0.0, "p_rot90": 0.0}
    presets: dict[str, dict[str, float]] = {
        "none": zero,
        "flips": {},
        "geometric": {"p_rotate": 0.3, "p_resized_crop": 0.3},
        "full": {
            "p_rotate": 0.3,
            "p_resized_crop": 0.3,
            "p_brightness": 0.5,
            "p_contrast": 0.5,
            "p_noise": 0.3,
            "p_blur": 0.2,
        },
    }
    if name not in presets:
        raise ConfigError(f"augmentation preset must be one of {', '.join(presets)}; got {name!r}")
    return AugmentConfig.model_validate(presets[name])


class JointAugment:
    """Apply :class:`AugmentConfig` to ``image (C, H, W) float`` and ``mask (H, W) int64`` together."""

    def __init__(self, config: AugmentConfig, ignore_index: int = 255) -> None:
        self.config = config
        self.ignore_index = int(ignore_index)
        if config.p_rotate > 0 or config.p_resized_crop > 0 or config.p_blur > 0:
            # import now, in the process that builds the dataset: forked DataLoader workers inherit the
            # module instead of each importing torchvision on its first sample
            import torchvision.transforms.v2.functional  # noqa: F401

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        c = self.config
        g = generator

        def coin(p: float) -> bool:
            return p > 0 and float(torch.rand((), generator=g)) < p

        def uniform(lo: float, hi: float, size: Sequence[int] = ()) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(tuple(size), generator=g)

        if coin(c.p_hflip):
            image, mask = image.flip(-1), mask.flip(-1)
        if coin(c.p_vflip):
            image, mask = image.flip(-2), mask.flip(-2)
        if coin(c.p_rot90):
            k = int(torch.randint(1, 4, (), generator=g))
            image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        if coin(c.p_rotate):
            angle = float(uniform(-c.rotate_degrees, c.rotate_degrees))
            image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
            mask = (
                TF.rotate(
                    mask[None].float(),
                    angle,
                    interpolation=InterpolationMode.NEAREST,
                    fill=float(self.ignore_index),
                )[0]
                .round()
                .long()
            )
        if coin(c.p_resized_crop):
            h, w = mask.shape[-2:]
            area = h * w * float(uniform(*c.crop_scale))
            ratio = math.exp(float(uniform(math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]))))
            ch = max(1, min(h, round(math.sqrt(area / ratio))))
            cw = max(1, min(w, round(math.sqrt(area * ratio))))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            image = TF.resized_crop(
                image, top, left, ch, cw, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True
            )
            mask = (
                TF.resized_crop(
                    mask[None].float(), top, left, ch, cw, [h, w], interpolation=InterpolationMode.NEAREST
                )[0]
                .round()
                .long()
            )
        bands = c.radiometric_bands if c.radiometric_bands is not None else list(range(image.shape[0]))
        bands = [b for b in bands if 0 <= b < image.shape[0]]
        if bands:
            sel = torch.tensor(bands)
            if coin(c.p_brightness):
                image = image.clone()
                image[sel] += uniform(-c.brightness, c.brightness, (len(bands), 1, 1))
            if coin(c.p_contrast):
                image = image.clone()
                mean = image[sel].mean(dim=(-2, -1), keepdim=True)
                image[sel] = (image[sel] - mean) * uniform(*c.contrast, (len(bands), 1, 1)) + mean
            if coin(c.p_noise):
                image = image.clone()
                image[sel] += c.noise_std * torch.randn(image[sel].shape, generator=g)
            if coin(c.p_blur):
                sigma = float(uniform(*c.blur_sigma))
                k = max(3, 2 * math.ceil(2 * sigma) + 1)
                image = image.clone()
                image[sel] = TF.gaussian_blur(image[sel], [k, k], [sigma, sigma])
        return image.contiguous(), mask.contiguous()


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` pairs: a permutation seeded by ``seed + epoch`` (Lightning calls
    :meth:`set_epoch`), and a per-sample augmentation seed, so epochs are identical across runs, worker
    counts and resumes."""

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.size = int(size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        yield from zip(order.tolist(), seeds.tolist(), strict=True)


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------
DEFAULT_CACHE_MB = 512.0


def default_workers(accelerator: Literal["cpu", "gpu"] = "cpu", cpus: int | None = None) -> int:
    """A DataLoader worker count for training on ``accelerator`` with ``cpus`` cores (default: this machine).

    On a CPU the training step itself uses every core through torch's threads, and a cached chip costs
    about 0.1 ms (64 px) to 1 ms (256 px) to normalize and augment: loading in the main process (0
    workers) is fastest on up to 4 cores (measured on 2 cores: loader/in-memory 0.93 with 0 workers, 0.87
    with 1, 0.92 with 2; ``bench/train_loader.py``), and a few workers help only on larger machines. A GPU
    step leaves the CPU free, so up to 8 workers (one core kept for the main process).
    """
    import os

    n = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    n = int(cpus) if cpus is not None else n
    if accelerator == "gpu":
        return max(0, min(8, n - 1))
    return 0 if n <= 4 else min(4, (n - 1) // 4)


class ChipDataset(Dataset):
    """Chips of one split of a chip folder.

    Items are dicts: ``image`` float32 ``(C, H, W)`` normalized (nodata pixels = the normalization's fill),
    ``mask`` int64 ``(H, W)`` contiguous class indices with ``ignore_index`` for unlabelled and nodata pixels,
    ``index`` (row in this split).

    Args:
        root: the chip folder.
        split: ``trn``, ``val``, ``tst`` or ``None`` for all chips.
        normalization: override the dataset's normalization (e.g. the one stored in a model package).
        schema: map mask codes with this schema (e.g. a model's) instead of the dataset's; codes it lacks
            become ignore.
        augment: joint augmentation (``None`` = off).
        bands: 0-based band subset of the chips (default all, in dataset order).
        info: the already-loaded ``dataset.json`` (saves reading it again).
        cache_mb: in-memory chip cache budget per process (each DataLoader worker holds its own copy).
            When the split's chips fit (estimated from chip size, band count and dtypes), every chip is
            read from disk once per process and kept as raw arrays; later epochs only normalize, map codes
            and augment. ``0`` turns the cache off; a split larger than the budget is read from disk.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "trn",
        *,
        normalization: Normalization | None = None,
        schema: ClassSchema | None = None,
        augment: AugmentConfig | None = None,
        bands: Sequence[int] | None = None,
        info: DatasetInfo | None = None,
        cache_mb: float = DEFAULT_CACHE_MB,
    ) -> None:
        self.root = Path(root)
        self.info = info or load_dataset_info(self.root)
        self.split = split
        self.rows = read_manifest(self.root, split)
        if not self.rows:
            counts = {s: len(read_manifest(self.root, s)) for s in SPLITS}
            raise EmptyInputError(
                f"{self.root} has no chips in split {split!r} (chips per split: {counts}); "
                f"re-create chips with a {split} share, or choose another split"
            )
        self.schema = schema or self.info.schema
        self.bands = list(bands) if bands is not None else None
        norm = normalization or self.info.normalization
        expected = len(self.bands) if self.bands is not None else len(self.info.bands)
        if norm.bands != expected:
            raise InputError(f"normalization has {norm.bands} bands but the chips provide {expected}")
        self.normalization = norm
        self.ignore_index = self.schema.ignore_index
        self.augment = (
            JointAugment(augment, self.ignore_index) if augment is not None and augment.enabled else None
        )
        self.cache_mb = float(cache_mb)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        need = self.estimated_bytes()
        self.cache_enabled = self.cache_mb > 0 and need <= self.cache_mb * 2**20
        if self.cache_mb > 0 and not self.cache_enabled:
            log.info(
                "%s split %s: %d chips need about %.0f MB, more than cache_mb=%.0f; chips are read from "
                "disk every epoch (raise cache_mb to cache them)",
                self.root,
                split,
                len(self.rows),
                need / 2**20,
                self.cache_mb,
            )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def in_channels(self) -> int:
        return len(self.bands) if self.bands is not None else len(self.info.bands)

    def class_counts(self) -> np.ndarray:
        """Pixel counts per class (schema order) from the manifest's ``px_<code>`` columns."""
        return class_pixel_counts(self.rows, self.schema)

    def estimated_bytes(self) -> int:
        """Memory the raw chips of this split take in the cache (image, validity and mask arrays)."""
        size = self.info.chip_size
        try:
            itemsize = np.dtype(self.info.dtype).itemsize if self.info.dtype else 8
        except TypeError:
            itemsize = 8
        mask_itemsize = np.dtype(self.schema.mask_dtype).itemsize
        per_chip = size * size * (self.in_channels * itemsize + 1 + mask_itemsize) + 512
        return per_chip * len(self.rows)

    @property
    def cached(self) -> int:
        """Number of chips held in this process's cache."""
        return len(self._cache)

    def preload(self, threads: int = 4) -> int:
        """Read every chip of the split into the cache now (when it fits ``cache_mb``); returns the count.

        Call it before creating a DataLoader with workers: on platforms that fork (Linux), the workers then
        share the cached arrays instead of each reading every chip once.
        """
        if not self.cache_enabled:
            return 0
        todo = [i for i in range(len(self.rows)) if i not in self._cache]
        if threads > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(self.read, todo))
        else:
            for i in todo:
                self.read(i)
        return len(self._cache)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw chip: ``(image in file dtype, valid (H, W) bool, mask codes (H, W))``.

        Arrays served from the cache are read-only; copy them before changing them.
        """
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        data, valid, codes = self._read_files(index)
        if self.cache_enabled:
            for a in (data, valid, codes):
                a.setflags(write=False)
            self._cache[index] = (data, valid, codes)
        return data, valid, codes

    def _read_files(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import rasterio
        from rasterio.enums import MaskFlags

        row = self.rows[index]
        img_path, mask_path = self.root / row["image"], self.root / row["mask"]
        try:
            with rasterio.open(img_path) as ds:
                idx = list(range(1, ds.count + 1)) if self.bands is None else [b + 1 for b in self.bands]
                data = ds.read(idx)
                flags = [ds.mask_flag_enums[i - 1] for i in idx]
                # the one validity policy (io.validity): declared nodata and NaN/inf from the values, or
                # GDAL's masks where the chip carries one (an internal mask, an alpha band)
                from_values = all(f in ([MaskFlags.all_valid], [MaskFlags.nodata]) for f in flags)
                valid, _ = block_validity(
                    data,
                    [ds.nodatavals[i - 1] for i in idx],
                    gdal_masks=None if from_values else ds.read_masks(idx),
                )
            with rasterio.open(mask_path) as ds:
                codes = ds.read(1)
        except rasterio.errors.RasterioIOError as exc:
            raise ReadError(f"Cannot read chip {row['chip_id']} ({img_path} / {mask_path}): {exc}") from exc
        if data.shape[1:] != codes.shape:
            raise InputError(
                f"chip {row['chip_id']}: image {data.shape[1:]} and mask {codes.shape} sizes differ"
            )
        return data, valid, codes

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        data, valid, codes = self.read(int(index))
        image = self.normalization.apply(data, valid)
        target = np.where(valid, self.schema.code_to_index(codes), self.ignore_index)
        img_t = torch.from_numpy(np.ascontiguousarray(image))
        mask_t = torch.from_numpy(np.ascontiguousarray(target))
        if self.augment is not None:
            g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            img_t, mask_t = self.augment(img_t, mask_t, g)
        return {"image": img_t, "mask": mask_t, "index": int(index)}
