"""Training chips from rasters and labels: planning, filters, leakage-safe splits, manifest, statistics.

A chip dataset is a folder (format ``rasterlearn-chips/1``)::

    DIR/images/<chip_id>.tif   image chip: selected bands, source dtype and nodata, window georeference
    DIR/masks/<chip_id>.tif    class codes (uint8, uint16 when codes exceed 255), nodata = ignore code
    DIR/manifest.csv           one row per kept chip (paths, scene, split, window, bounds, pixel counts)
    DIR/candidates.csv         every planned window with its statistics and drop reason (for ``analyze``)
    DIR/dataset.json           parameters and their hash, schema, bands, trn statistics, CRS, splits

The job runs in phases that never hold a scene in memory: *scan* (read each planned window, rasterize
its labels, count pixels per class, apply the filters and write the chips that pass them; statistics
cached per scene in ``DIR/.scan/``), *split* (decided on the kept chips' footprints and pixel counts,
before any augmentation; chips it drops are removed again) and *write* (completes chips an interrupted
run left missing). Every chip file is written under a temporary name, then renamed; chip files do not
depend on the split, which lives in the manifest. Re-running with the same parameters skips finished chips; changed parameters go to
a new folder ``DIR-<hash>`` (or replace ``DIR`` with ``overwrite=True``), never mixing two parameter sets.

Splits: ``blocks`` (default) cuts the map into square blocks larger than a chip (anchored at the first
scene's top-left corner, in map coordinates, so overlapping scenes share blocks), assigns whole blocks to trn/val/tst (seeded, balancing kept
chips), and drops chips whose footprint touches blocks of two different splits: trn and val chips never
overlap. ``random`` and ``stratified`` (by the rarest class present) split chips individually and are
logged and recorded as *leaky* when chips overlap (stride < size). ``scene`` takes each scene's split
from the scenes CSV.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from rasterlearn._util import atomic_write, atomic_write_json, file_identity, json_default, stable_hash
from rasterlearn.chip_blocks import any_rotated, pixel_space_bounds
from rasterlearn.errors import (
    ConfigError,
    CRSError,
    EmptyInputError,
    InputError,
    InputNotFoundError,
    OutputError,
    ReadError,
)
from rasterlearn.grid import Grid, Window, plan_tiles
from rasterlearn.io.paths import acquire_lock, check_outputs, release_lock
from rasterlearn.io.raster import BandStats, RasterReader, band_statistics, gdal_cache
from rasterlearn.io.stack import NodataPolicy, StackReader
from rasterlearn.label_grid import LabelRaster
from rasterlearn.labels import (
    ClassSchema,
    LabelAreasMode,
    OverlapRule,
    UnknownPolicy,
    VectorLabels,
    apply_validity,
    crs_name,
    infer_schema,
    is_raster_path,
)
from rasterlearn.normalize import Normalization

__all__ = [
    "FORMAT",
    "SPLITS",
    "ChipJob",
    "ChipResult",
    "Compression",
    "LabelRaster",
    "Scene",
    "SplitMethod",
    "apply_filters",
    "block_split",
    "load_label_areas",
    "load_vector_labels",
    "make_chips",
    "parse_class_proportion",
    "random_split",
    "read_scenes_csv",
    "stratified_split",
]

log = logging.getLogger(__name__)

FORMAT = "rasterlearn-chips/1"
SPLITS = ("trn", "val", "tst")
SplitMethod = Literal["auto", "blocks", "random", "stratified", "scene"]
Compression = Literal["deflate", "lzw", "zstd", "none"]
DROP_REASONS = ("empty", "nodata", "unlabelled", "annotated", "class_proportion", "straddle")
Progress = Callable[[int], None]

_SPLIT_ALIASES = {
    "trn": "trn",
    "train": "trn",
    "training": "trn",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "tst": "tst",
    "test": "tst",
    "testing": "tst",
}


# =================================================================================================
# Scenes
# =================================================================================================


@dataclass
class Scene:
    """One image with its labels.

    Attributes:
        image: the raster.
        labels: a vector layer (polygons, lines or points) or, by extension, a label raster.
        label_raster: a pre-rasterized label raster (class values), instead of ``labels``.
        attribute: the class attribute of ``labels`` (default: the job's attribute; none = constant burn).
        split: ``trn``/``val``/``tst`` for per-scene splits (scenes CSV), else ``None``.
        metadata: free metadata (GDL's metadata column), recorded in ``dataset.json``.
        layer: vector layer name.
        id: scene id (default: the image file stem, made unique).
        later_images: rasters of later dates of a multi-date scene (``image`` is the first date); the
            scene is then read as one T x C band stack (:class:`rasterlearn.io.stack.StackReader`).
        nodata_policy: multi-date scenes: ``all-valid`` (nodata in any date is nodata) or ``any-valid``.
        nodata: single-date scenes: a nodata value to assume when the image declares none (``--nodata``).
    """

    image: Path
    labels: Path | None = None
    label_raster: Path | None = None
    attribute: str | None = None
    split: str | None = None
    metadata: str | None = None
    layer: str | None = None
    id: str | None = None
    later_images: list[Path] = field(default_factory=list)
    nodata_policy: NodataPolicy = "all-valid"
    nodata: float | None = None

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.later_images = [Path(p) for p in self.later_images]
        if self.labels is not None:
            self.labels = Path(self.labels)
            if self.label_raster is None and is_raster_path(self.labels):
                self.label_raster, self.labels = self.labels, None
        if self.label_raster is not None:
            self.label_raster = Path(self.label_raster)
        if self.labels is not None and self.label_raster is not None:
            raise InputError(f"Scene {self.image}: give vector labels or a label raster, not both")
        self.split = normalize_split(self.split, str(self.image))
        if self.nodata is not None and self.later_images:
            raise InputError(
                f"Scene {self.image}: nodata is supported for single-date scenes only; declare the nodata "
                f"value in each date's raster instead (gdal_edit.py -a_nodata VALUE FILE)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": str(self.image),
            "labels": _opt(self.labels or self.label_raster),
            "labels_kind": "raster" if self.label_raster else ("vector" if self.labels else None),
            "attribute": self.attribute,
            "split": self.split,
            "metadata": self.metadata,
            "layer": self.layer,
            **(
                {"later_images": [str(p) for p in self.later_images], "nodata_policy": self.nodata_policy}
                if self.later_images
                else {}
            ),
            **({"nodata": self.nodata} if self.nodata is not None else {}),
        }

    @property
    def timesteps(self) -> int:
        """Number of dates (1 for a single image)."""
        return 1 + len(self.later_images)

    def open(self, bands: Sequence[int | str] | None = None) -> RasterReader | StackReader:
        """The scene's image reader: a :class:`RasterReader`, or a :class:`StackReader` over its dates."""
        if not self.later_images:
            return RasterReader(self.image, bands, nodata=self.nodata)
        return StackReader([self.image, *self.later_images], bands, nodata_policy=self.nodata_policy)


def _opt(p: Path | None) -> str | None:
    return None if p is None else str(p)


def normalize_split(value: Any, where: str = "") -> str | None:
    """``train``/``trn``/... to ``trn``/``val``/``tst``; empty to ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    key = str(value).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise InputError(f"Unknown split {value!r}{f' for {where}' if where else ''}; use trn, val or tst")
    return _SPLIT_ALIASES[key]


_DATE_COLUMN = re.compile(r"image_(\d+)")  # later dates of a multi-date scene: image_2, image_3, ...
_CSV_COLUMNS = {
    "image": ("image", "tif", "tif_path", "raster", "img", "image_path"),
    "labels": ("labels", "gpkg", "gpkg_path", "vector", "label", "labels_path", "vector_path"),
    "label_raster": ("label_raster", "mask", "label_tif"),
    "attribute": ("attribute", "attribute_name", "attribute_field", "field"),
    "split": ("split", "dataset", "set", "subset"),
    "metadata": ("metadata", "meta"),
    "layer": ("layer",),
    "id": ("id", "scene", "scene_id", "name"),
}


def read_scenes_csv(path: str | Path) -> list[Scene]:
    """Read a scenes CSV in geo-deep-learning's layout or with a header.

    Without a header the columns are positional, as in geo-deep-learning:
    ``image, metadata, labels, attribute, split`` (5 columns), ``image, labels, attribute, split`` (4),
    ``image, labels, attribute`` (3) or ``image, labels`` (2). With a header, columns are found by name
    (``image``/``tif``, ``labels``/``gpkg``, ``label_raster``, ``attribute``, ``split``/``dataset``,
    ``metadata``, ``layer``, ``id``; multi-date scenes: ``image_2``, ``image_3`` ... for the later dates,
    in time order, and ``nodata_policy``). Relative paths are resolved from the CSV's folder. A labels path with a
    raster extension (.tif, .vrt, ...) is a label raster. Split values: trn/train, val/validation, tst/test.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"Scenes CSV not found: {p}")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = [
            r for r in csv.reader(fh) if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")
        ]
    if not rows:
        raise EmptyInputError(
            f"Scenes CSV {p} has no rows; expected 'image, metadata, labels, attribute, split'"
        )
    base = p.parent
    header = [c.strip().lower() for c in rows[0]]
    known = {alias for aliases in _CSV_COLUMNS.values() for alias in aliases}
    scenes: list[Scene] = []
    if any(h in known for h in header) and not (base / rows[0][0].strip()).exists():
        index: dict[str, int] = {}
        for key, aliases in _CSV_COLUMNS.items():
            for i, h in enumerate(header):
                if h in aliases and key not in index:
                    index[key] = i
        dates = sorted(
            ((int(m.group(1)), i) for i, h in enumerate(header) if (m := _DATE_COLUMN.fullmatch(h))),
        )
        for key, i in ((f"image_{n}", i) for n, i in dates):
            index[key] = i
        if "nodata_policy" in header:
            index["nodata_policy"] = header.index("nodata_policy")
        unknown = [
            h for h in header if h not in known and not _DATE_COLUMN.fullmatch(h) and h != "nodata_policy"
        ]
        if unknown:
            raise ConfigError(
                f"Scenes CSV {p}: unknown columns {unknown}; known: "
                f"{', '.join(k for k in _CSV_COLUMNS)} (and aliases)"
            )
        if "image" not in index:
            raise ConfigError(f"Scenes CSV {p} needs an 'image' column; header is {rows[0]}")
        for n, row in enumerate(rows[1:], start=2):
            vals = {
                k: (row[i].strip() if i < len(row) and row[i].strip() else None) for k, i in index.items()
            }
            scenes.append(_scene_from(vals, base, p, n))
    else:
        layouts = {
            5: ("image", "metadata", "labels", "attribute", "split"),
            4: ("image", "labels", "attribute", "split"),
            3: ("image", "labels", "attribute"),
            2: ("image", "labels"),
            1: ("image",),
        }
        for n, row in enumerate(rows, start=1):
            cells = [c.strip() for c in row]
            while len(cells) > 1 and cells[-1] == "" and len(cells) > 5:
                cells.pop()
            if len(cells) not in layouts:
                raise ConfigError(
                    f"Scenes CSV {p} line {n} has {len(cells)} columns; expected geo-deep-learning's "
                    f"'image, metadata, labels, attribute, split' or a header row"
                )
            vals = {k: (v or None) for k, v in zip(layouts[len(cells)], cells, strict=True)}
            scenes.append(_scene_from(vals, base, p, n))
    return scenes


def _scene_from(vals: Mapping[str, str | None], base: Path, csv_path: Path, line: int) -> Scene:
    def resolve(v: str | None) -> Path | None:
        if v is None:
            return None
        q = Path(v).expanduser()
        q = q if q.is_absolute() else base / q
        if not q.exists():
            raise InputNotFoundError(
                f"{csv_path} line {line}: {v} not found (relative paths are resolved from {base})"
            )
        return q

    image = resolve(vals.get("image"))
    if image is None:
        raise ConfigError(f"{csv_path} line {line}: no image path")
    later = [
        resolve(vals[k])
        for k in sorted((k for k in vals if _DATE_COLUMN.fullmatch(k)), key=lambda k: int(k.split("_")[1]))
        if vals[k]
    ]
    policy = vals.get("nodata_policy") or "all-valid"
    if policy not in ("all-valid", "any-valid"):
        raise ConfigError(f"{csv_path} line {line}: nodata_policy {policy!r}: use all-valid or any-valid")
    return Scene(
        image=image,
        labels=resolve(vals.get("labels")),
        label_raster=resolve(vals.get("label_raster")),
        attribute=vals.get("attribute"),
        split=normalize_split(vals.get("split"), f"{csv_path} line {line}"),
        metadata=vals.get("metadata"),
        layer=vals.get("layer"),
        id=vals.get("id"),
        later_images=[q for q in later if q is not None],
        nodata_policy=policy,  # type: ignore[arg-type]
    )


def _unique_ids(scenes: Sequence[Scene]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in scenes:
        base = s.id or s.image.stem
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}_{n + 1}")
    if len(set(out)) != len(out):  # a stem like 'a_2' colliding with a renamed duplicate
        out = [f"{o}_{i}" for i, o in enumerate(out)]
    return out


# =================================================================================================
# Label sources (thin I/O wrappers over the kernels in rasterlearn.labels)
# =================================================================================================


def load_vector_labels(
    path: str | Path,
    grid: Grid,
    *,
    attribute: str | None = None,
    layer: str | int | None = None,
    raster: str = "raster",
) -> Any:
    """Read vector labels for a raster grid: features intersecting the raster, in the raster's CRS.

    Reprojection and geometry repairs are logged (by :func:`rasterlearn.io.vector.read_vector`).

    Raises:
        InputNotFoundError, ReadError, AttributeNotFoundError, EmptyInputError (empty layer),
        CRSError (missing CRS), NoOverlapError (no feature over the raster).
    """
    import pyogrio

    from rasterlearn.io.vector import check_overlap, list_layers, read_vector, resolve_layer

    if grid.crs is None:
        raise CRSError(
            f"The {raster} has no CRS, so vector labels cannot be placed on it. Assign it a CRS "
            f"(gdal_edit.py -a_srs EPSG:xxxx) or use a label raster on the same grid."
        )
    if not Path(str(path)).exists():
        raise InputNotFoundError(
            f"Vector file not found: {path}. Check the path (relative paths are resolved from {Path.cwd()})."
        )
    layer = resolve_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise ReadError(f"Cannot open {path} as a vector layer (layer={layer!r}): {exc}") from exc
    if int(info.get("features", -1)) == 0:
        raise EmptyInputError(
            f"The vector layer {path} (layer={layer!r}) has no features. Choose another layer "
            f"(layers: {', '.join(list_layers(path))}) or file."
        )
    gdf = read_vector(
        path,
        layer=layer,
        attribute=attribute,
        crs=grid.crs,
        bounds=grid.bounds,
        bounds_crs=grid.crs,
        allow_empty=True,
    )
    check_overlap(gdf, grid, what="labels", raster=raster)
    return gdf


def load_label_areas(path: str | Path, grid: Grid, *, layer: str | int | None = None) -> Any:
    """Read a polygon layer of label areas (where annotation is complete), in the grid's CRS."""
    from rasterlearn.io.vector import check_overlap, read_vector

    gdf = read_vector(
        path, layer=layer, crs=grid.crs, bounds=grid.bounds, bounds_crs=grid.crs, allow_empty=True
    )
    check_overlap(gdf, grid, what="label areas", raster="raster")
    poly = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not poly.all():
        log.warning("%s: %d non-polygon label areas ignored", path, int((~poly).sum()))
        gdf = gdf.loc[poly]
    return gdf


# =================================================================================================
# Filters and splits (pure functions on the candidates table)
# =================================================================================================


def parse_class_proportion(value: str | Mapping[Any, Any] | None) -> dict[int, float]:
    """``"1:5,2:10"`` or ``{1: 5, 2: 10}`` (class code -> minimum percent) to a dict."""
    if value is None or value == "" or value == {}:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if ":" not in part:
                raise ConfigError(f"class proportion {part!r} must be 'code:percent', e.g. '1:5,2:10'")
            k, v = part.split(":", 1)
            items.append((k, v))
    out: dict[int, float] = {}
    for k, v in items:
        try:
            code, pct = int(str(k).strip()), float(str(v).strip())
        except ValueError as exc:
            raise ConfigError(f"class proportion {k}:{v} must be an integer code and a percent") from exc
        if not 0 <= pct <= 100:
            raise ConfigError(f"class proportion for class {code} must be a percent in 0..100, got {pct}")
        out[code] = pct
    return out


def apply_filters(
    table: pd.DataFrame,
    schema: ClassSchema,
    *,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | None = None,
) -> pd.Series:
    """The first failing filter of each candidate chip ("" = kept).

    Order: ``empty`` (no valid image pixel), ``nodata`` (nodata percent > ``max_nodata``), ``unlabelled``
    (every pixel is ignore), ``annotated`` (percent of non-background labelled pixels < ``min_annotated``,
    geo-deep-learning's ``min_annot_perc``), ``class_proportion`` (a listed class covers less than its
    percent of the chip's labelled pixels).
    """
    reasons = pd.Series("", index=table.index, dtype=object)
    fails = filter_failures(
        table, schema, min_annotated=min_annotated, max_nodata=max_nodata, class_proportion=class_proportion
    )
    for name in reversed(list(fails)):
        reasons[fails[name]] = name
    return reasons


def filter_failures(
    table: pd.DataFrame,
    schema: ClassSchema,
    *,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | None = None,
) -> dict[str, pd.Series]:
    """Each filter's verdict on every candidate, independently of the others (True = fails)."""
    px = table["height"] * table["width"]
    labelled = table["labelled_fraction"] * px
    out = {
        "empty": table["nodata_fraction"] >= 1.0,
        "nodata": table["nodata_fraction"] * 100.0 > max_nodata + 1e-9,
        "unlabelled": labelled <= 0,
        "annotated": table["annotated_fraction"] * 100.0 < min_annotated - 1e-9,
    }
    prop = pd.Series(False, index=table.index)
    for code, pct in (class_proportion or {}).items():
        if code not in schema.codes:
            raise ConfigError(
                f"class_proportion names class {code}, which is not in the schema ({schema.describe()})"
            )
        share = np.divide(table[f"px_{code}"], labelled, out=np.zeros(len(table)), where=labelled > 0) * 100.0
        prop |= share < pct - 1e-9
    out["class_proportion"] = prop
    return out


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder integer counts per split summing to ``n``."""
    raw = {s: fractions.get(s, 0.0) * n for s in SPLITS}
    counts = {s: math.floor(v) for s, v in raw.items()}
    rest = n - sum(counts.values())
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True)[:rest]:
        counts[s] += 1
    return counts


def random_split(n: int, fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split ``n`` items at random (seeded) into trn/val/tst with the given fractions."""
    counts = _split_counts(n, fractions)
    labels = np.array(
        ["trn"] * counts["trn"] + ["val"] * counts["val"] + ["tst"] * counts["tst"], dtype=object
    )
    rng = np.random.default_rng(seed)
    return labels[rng.permutation(n)] if n else labels


def stratified_split(keys: Sequence[Any], fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split items at random within each stratum (``keys``) so every stratum follows the fractions."""
    keys_arr = np.asarray([str(k) for k in keys], dtype=object)
    out = np.empty(len(keys_arr), dtype=object)
    for i, key in enumerate(sorted(set(keys_arr.tolist()))):
        idx = np.flatnonzero(keys_arr == key)
        out[idx] = random_split(len(idx), fractions, seed + 7919 * (i + 1))
    return out


def block_split(
    bounds: np.ndarray,
    block: tuple[float, float],
    fractions: Mapping[str, float],
    seed: int,
) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """Leakage-safe spatial split by blocks.

    Args:
        bounds: (n, 4) chip footprints ``minx, miny, maxx, maxy`` in one CRS.
        block: block width and height in CRS units (offsets from the blocks' origin; y may run either way).
        fractions: target share of chips per split.
        seed: random seed of the block order.

    Returns:
        The split of each chip (``"straddle"`` for chips touching blocks of two splits) and the split of
        each block. Blocks are visited in a seeded random order and each goes to the split furthest below
        its target share of chips (chips counted in the block holding their centre).
    """
    n = len(bounds)
    bw, bh = block
    if n == 0:
        return np.empty(0, dtype=object), {}
    b = np.asarray(bounds, dtype="float64")
    eps_x, eps_y = 1e-7 * bw, 1e-7 * bh
    ix0 = np.floor(b[:, 0] / bw + 1e-9).astype(int)
    ix1 = np.floor((b[:, 2] - eps_x) / bw).astype(int)
    iy0 = np.floor(b[:, 1] / bh + 1e-9).astype(int)
    iy1 = np.floor((b[:, 3] - eps_y) / bh).astype(int)
    cx = np.floor(((b[:, 0] + b[:, 2]) / 2) / bw).astype(int)
    cy = np.floor(((b[:, 1] + b[:, 3]) / 2) / bh).astype(int)
    weight: dict[tuple[int, int], int] = {}
    for key in zip(cx.tolist(), cy.tolist(), strict=True):
        weight[key] = weight.get(key, 0) + 1
    touched = set(weight)
    for i in range(n):
        for x in range(ix0[i], ix1[i] + 1):
            for y in range(iy0[i], iy1[i] + 1):
                touched.add((x, y))
    blocks = sorted(touched)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    assigned: dict[tuple[int, int], str] = {}
    count = dict.fromkeys(SPLITS, 0)
    total = 0
    active = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
    # the first blocks seed every requested split (largest share first), so no requested split stays empty
    # while there are at least as many blocks as splits; the rest go to the split furthest below its target
    unseeded = sorted(active, key=lambda s: -fractions[s])
    for k in order:
        key = blocks[k]
        w = weight.get(key, 0)
        if w == 0:
            continue
        total += w
        if unseeded:
            best = unseeded.pop(0)
        else:
            best = max(active, key=lambda s: (fractions[s] * total - count[s], fractions[s]))
        assigned[key] = best
        count[best] += w
    # blocks that hold no chip centre but are reached by chips take the most common split of those chips
    # (ties: the first split in trn, val, tst order), so every touched block has one split
    votes: dict[tuple[int, int], dict[str, int]] = {}
    for i in range(n):
        home = assigned[(int(cx[i]), int(cy[i]))]
        for x in range(ix0[i], ix1[i] + 1):
            for y in range(iy0[i], iy1[i] + 1):
                if (x, y) not in assigned:
                    v = votes.setdefault((x, y), {})
                    v[home] = v.get(home, 0) + 1
    for key, v in votes.items():
        assigned[key] = max(SPLITS, key=lambda s: (v.get(s, 0), -SPLITS.index(s)))
    # a chip is kept only when every block it touches has its home block's split: blocks are disjoint,
    # so chips of two splits never share a pixel
    out = np.empty(n, dtype=object)
    for i in range(n):
        home = assigned[(int(cx[i]), int(cy[i]))]
        same = all(
            assigned[(x, y)] == home for x in range(ix0[i], ix1[i] + 1) for y in range(iy0[i], iy1[i] + 1)
        )
        out[i] = home if same else "straddle"
    return out, assigned


# =================================================================================================
# Chip writing
# =================================================================================================


def _write_tif(
    path: Path,
    data: np.ndarray,
    *,
    transform: Any,
    crs: Any,
    nodata: float | None,
    descriptions: Sequence[str] | None = None,
    colormap: Mapping[int, Any] | None = None,
    compress: Compression = "deflate",
    valid: np.ndarray | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write a small GeoTIFF under a temporary name, then rename it into place (atomic)."""
    import rasterio

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if compress != "none":
        profile["compress"] = compress
    if data.shape[0] > 1:
        profile["interleave"] = "pixel" if data.shape[0] <= 4 else "band"

    def write(tmp: Path) -> None:
        with rasterio.Env(GDAL_TIF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as ds:
            if colormap:
                ds.write_colormap(
                    1, colormap
                )  # before the data: the palette photometric tag is set at creation
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    ds.set_band_description(i, d)
            if tags:
                ds.update_tags(**tags)
            ds.write(data)
            if valid is not None:
                ds.write_mask(np.where(valid, 255, 0).astype("uint8"))

    atomic_write(path, write)


def _colormap(schema: ClassSchema) -> dict[int, tuple[int, int, int, int]]:
    from rasterlearn.io.writer import hex_to_rgba

    cmap = {c.code: hex_to_rgba(c.color) for c in schema.classes}
    cmap[schema.ignore_index] = (0, 0, 0, 0)
    return cmap


# =================================================================================================
# The job
# =================================================================================================


@dataclass
class ChipResult:
    """What a chips job produced."""

    out: Path
    manifest: pd.DataFrame
    dataset: dict[str, Any]
    written: int
    skipped: int

    @property
    def splits(self) -> dict[str, int]:
        return dict(self.dataset["splits"])


@dataclass
class _SceneState:
    scene: Scene
    id: str
    grid: Grid
    bands: list[str]
    band_indexes: list[int]
    dtype: str
    nodata: float | None
    windows: int
    labels_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _file_identity(p: Path | None) -> dict[str, Any] | None:
    return None if p is None else file_identity(p)


def _atomic_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


_PARAMS_FILE = ".chips.params.json"
_OWNED = (
    "images",
    "masks",
    "manifest.csv",
    "candidates.csv",
    "dataset.json",
    ".scan",
    _PARAMS_FILE,
    "analysis",
)


_Phase = TypeVar("_Phase", bound=Callable[..., Any])


def _unlock_on_error(method: _Phase) -> _Phase:
    """A failing phase of a :class:`ChipJob` releases the output folder's lock (taken by ``prepare``)."""

    @functools.wraps(method)
    def run(self: ChipJob, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            release_lock(self.requested_out)
            raise

    return run  # type: ignore[return-value]


class ChipJob:
    """A chips job in explicit phases, so callers (the CLI, notebooks) can show progress per phase.

    ``make_chips`` runs ``prepare() -> scan() -> split() -> write() -> finish()``; see its arguments.
    """

    def __init__(self, scenes: Sequence[Scene], out: str | Path, **options: Any) -> None:
        if not scenes:
            raise InputError("No scenes: give --raster/--labels pairs or a --scenes CSV")
        self.scenes = list(scenes)
        self.requested_out = Path(out)
        inputs = [p for s in self.scenes for p in (s.image, s.labels, s.label_raster, *s.later_images)]
        check_outputs([*inputs, options.get("label_areas"), options.get("schema")], [self.requested_out])
        self.opts = _check_options(options)
        self.out = self.requested_out
        self.schema: ClassSchema | None = None
        self.states: list[_SceneState] = []
        self.candidates: pd.DataFrame | None = None
        self.plan: pd.DataFrame | None = None
        self.split_method: str = ""
        self.leaky = False
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.written = 0
        self.skipped = 0
        self.params: dict[str, Any] = {}
        self.params_hash = ""
        self._block_info: dict[str, Any] = {}
        self._vectors: dict[str, VectorLabels] = {}
        self._fresh: set[str] = set()  # chips written by this run

    # -- phase 1: inputs, schema, output folder ---------------------------------------------------
    @_unlock_on_error
    def prepare(self) -> ChipJob:
        """Check the inputs, fix the class schema and the output folder; takes the folder's lock (released by
        :meth:`finish`, or taken over as stale once this process ends)."""
        acquire_lock(self.requested_out)
        o = self.opts
        ids = _unique_ids(self.scenes)
        for s, sid in zip(self.scenes, ids, strict=True):
            s.id = sid
            for img in (s.image, *s.later_images):
                if not img.exists():
                    raise InputNotFoundError(f"Raster not found: {img}")
            if s.labels is None and s.label_raster is None:
                raise InputError(
                    f"Scene {s.image} has no labels: give a vector (--labels) or a label raster "
                    f"(--label-raster)"
                )
        first_bands: list[str] | None = None
        values: list[Any] = []
        sparse = o["label_areas"] == "features"
        for s in self.scenes:
            if s.timesteps != self.scenes[0].timesteps:
                raise InputError(
                    f"Scene {s.image} has {s.timesteps} date(s) but {self.scenes[0].image} has "
                    f"{self.scenes[0].timesteps}; every scene of a dataset must have the same dates count"
                )
            with s.open(o["bands"]) as r:
                st = _SceneState(
                    s,
                    s.id or s.image.stem,
                    r.grid,
                    r.band_names,
                    r.band_indexes,
                    r.dtype,
                    r.nodata,
                    len(plan_tiles(r.grid, o["size"], o["stride"], edge="pad")),
                )
            if first_bands is None:
                first_bands = st.bands
            elif len(st.bands) != len(first_bands):
                raise InputError(
                    f"{s.image} has {len(st.bands)} selected bands but {self.scenes[0].image} has "
                    f"{len(first_bands)}; every scene must give the same bands (use --bands)"
                )
            self._check_grid(st)
            self.states.append(st)
        # label values for schema inference (vectors are read again per scene at scan time)
        given = o["schema"]
        if given is None:
            for st in self.states:
                src = self._open_labels(st, None)
                try:
                    values.extend(src.values())
                finally:
                    if isinstance(src, LabelRaster):
                        src.close()
            if any(st.scene.label_raster is not None for st in self.states) and not sparse:
                schema = infer_schema(
                    values, background=0 if 0 in values else None, ignore_index=o["ignore_index"]
                )
            elif all(self._attribute(st) is None for st in self.states) and len(set(values)) == 1:
                v = int(values[0])
                base = ClassSchema.binary(ignore_index=o["ignore_index"] or 255) if v == 1 else None
                schema = base or infer_schema(values, sparse=sparse, ignore_index=o["ignore_index"])
            else:
                schema = infer_schema(values, sparse=sparse, ignore_index=o["ignore_index"])
        else:
            schema = given
            if o["ignore_index"] is not None and o["ignore_index"] != schema.ignore_index:
                schema = replace(schema, ignore_index=int(o["ignore_index"]))
        self.schema = schema
        self._make_params()
        self.out = _resolve_out(self.requested_out, self.params_hash, o["overwrite"])
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "images").mkdir(exist_ok=True)
        (self.out / "masks").mkdir(exist_ok=True)
        (self.out / ".scan").mkdir(exist_ok=True)
        atomic_write_json(
            self.out / _PARAMS_FILE, {"params_hash": self.params_hash, "params": self.params}, default=str
        )
        log.info(
            "Chip dataset %s (parameters %s), %d scene(s), %d candidate windows, schema: %s",
            self.out,
            self.params_hash,
            len(self.states),
            self.n_windows,
            schema.describe(),
        )
        return self

    def _attribute(self, st: _SceneState) -> str | None:
        return st.scene.attribute or self.opts["attribute"]

    def _check_grid(self, st: _SceneState) -> None:
        g, size = st.grid, self.opts["size"]
        if g.height < size or g.width < size:
            log.warning(
                "%s is %dx%d px, smaller than one %d px chip: its chips are padded with nodata/ignore",
                st.scene.image,
                g.width,
                g.height,
                size,
            )
        if g.is_geographic:
            log.warning(
                "%s has a geographic CRS (%s): pixel sizes are in degrees, so block sizes are in degrees and "
                "a pixel's ground size varies with latitude; consider projecting the raster (e.g. UTM)",
                st.scene.image,
                crs_name(g.crs),
            )
        if g.crs is None:
            log.warning("%s has no CRS: chips are georeferenced by pixel transform only", st.scene.image)
        if not g.is_rectilinear:
            log.warning("%s has a rotated/sheared transform; chips keep it", st.scene.image)

    @property
    def n_windows(self) -> int:
        return sum(st.windows for st in self.states)

    def _open_labels(self, st: _SceneState, schema: ClassSchema | None) -> VectorLabels | LabelRaster:
        o, s = self.opts, st.scene
        src: VectorLabels | LabelRaster
        if s.label_raster is not None:
            src = LabelRaster(s.label_raster, st.grid, band=o["label_band"], unknown=o["unknown"])
            st.labels_note = src.note
            st.extra["label_alignment"] = src.alignment
        else:
            assert s.labels is not None
            if st.id in self._vectors:
                vec = self._vectors[st.id]
                if schema is not None and vec.schema is not schema:
                    vec.bind(schema)
                return vec
            attribute = self._attribute(st)
            gdf = load_vector_labels(
                s.labels, st.grid, attribute=attribute, layer=s.layer or o["layer"], raster=str(s.image)
            )
            areas: Any = o["label_areas"]
            if areas is not None and areas not in ("features", "extent"):
                areas = load_label_areas(areas, st.grid)
            src = VectorLabels(
                gdf,
                st.grid,
                attribute=attribute,
                burn_value=o["burn_value"],
                all_touched=o["all_touched"],
                overlap=o["overlap"],
                priority=o["priority"],
                label_areas=areas,
                unknown=o["unknown"],
                source=str(s.labels),
            )
            st.extra["features"] = len(src)
            self._vectors[st.id] = src
        if schema is not None:
            src.bind(schema)
        return src

    def _make_params(self) -> None:
        assert self.schema is not None
        o = self.opts
        opts = {k: v for k, v in o.items() if k not in ("overwrite", "schema", "cache_mb")}
        la = o["label_areas"]
        if la is not None and la not in ("features", "extent"):
            opts["label_areas"] = _file_identity(Path(la))
        self.params = {
            "format": FORMAT,
            "scenes": [
                {
                    "id": st.id,
                    "image": _file_identity(st.scene.image),
                    "labels": _file_identity(st.scene.labels or st.scene.label_raster),
                    "attribute": self._attribute(st),
                    "split": st.scene.split,
                    "layer": st.scene.layer,
                    "metadata": st.scene.metadata,
                    **(
                        {
                            "later_images": [file_identity(p) for p in st.scene.later_images],
                            "nodata_policy": st.scene.nodata_policy,
                        }
                        if st.scene.later_images
                        else {}
                    ),
                    **({"nodata": st.scene.nodata} if st.scene.nodata is not None else {}),
                }
                for st in self.states
            ],
            **opts,
            "schema": self.schema.to_dict(),
        }
        self.params_hash = stable_hash(self.params)

    # -- phase 2: scan -------------------------------------------------------------------------------
    @_unlock_on_error
    def scan(self, progress: Progress | None = None) -> pd.DataFrame:
        """Read every planned window, rasterize its labels and count pixels (cached per scene)."""
        with gdal_cache(self.opts["cache_mb"]):
            return self._scan_all(progress)

    def _scan_all(self, progress: Progress | None) -> pd.DataFrame:
        assert self.schema is not None
        frames = []
        for st in self.states:
            cache = self.out / ".scan" / f"{st.id}.csv"
            if cache.exists():
                df = pd.read_csv(cache, dtype={"scene": str})
                log.info("%s: scan results reused from an earlier run", st.id)
                if progress:
                    progress(st.windows)
            else:
                df = self._scan_scene(st, progress)
                _atomic_csv(cache, df)
            frames.append(df)
        table = pd.concat(frames, ignore_index=True)
        o = self.opts
        table["reason"] = apply_filters(
            table,
            self.schema,
            min_annotated=o["min_annotated"],
            max_nodata=o["max_nodata"],
            class_proportion=o["class_proportion"],
        )
        self.candidates = table
        return table

    def _scan_scene(self, st: _SceneState, progress: Progress | None) -> pd.DataFrame:
        schema = self.schema
        assert schema is not None
        o = self.opts
        codes = schema.codes
        rows = []
        labels = self._open_labels(st, schema)
        import rasterio.crs

        crs = None if st.grid.crs is None else rasterio.crs.CRS.from_wkt(st.grid.crs.to_wkt())
        cmap = _colormap(schema)
        try:
            with st.scene.open(st.band_indexes) as reader:
                for win in plan_tiles(st.grid, o["size"], o["stride"], edge="pad"):
                    block = reader.read(win)
                    mask = apply_validity(labels.mask(win), block.valid, schema.ignore_index)
                    row = _window_row(st, win, mask, block.valid, schema, codes)
                    rows.append(row)
                    # a chip that passes the filters is written now (one read per window); the split only
                    # decides its manifest row, and chips the split drops (straddling) are removed again
                    reason = apply_filters(
                        pd.DataFrame([row]),
                        schema,
                        min_annotated=o["min_annotated"],
                        max_nodata=o["max_nodata"],
                        class_proportion=o["class_proportion"],
                    )
                    if reason.iloc[0] == "":
                        chip_id = _chip_id(st.id, win.row_off, win.col_off)
                        if not self._chip_done(chip_id):
                            self._write_chip(st, win, chip_id, block, mask, crs, reader.nodata, cmap)
                            self._fresh.add(chip_id)
                            self.written += 1
                    if progress:
                        progress(1)
        finally:
            if isinstance(labels, LabelRaster):
                labels.close()
        return pd.DataFrame(rows)

    def _write_chip(
        self,
        st: _SceneState,
        win: Window,
        chip_id: str,
        block: Any,
        mask: np.ndarray,
        crs: Any,
        nodata: float | None,
        cmap: Mapping[int, Any],
    ) -> None:
        """Write one chip's image, then its mask (each atomically). Chip files do not depend on the split."""
        assert self.schema is not None
        o, schema = self.opts, self.schema
        transform = st.grid.window_transform(win)
        tags = {
            "RASTERLEARN_SCENE": st.id,
            "RASTERLEARN_WINDOW": f"{win.row_off},{win.col_off},{win.height},{win.width}",
        }
        _write_tif(
            self.out / "images" / f"{chip_id}.tif",
            block.data,
            transform=transform,
            crs=crs,
            nodata=nodata,
            descriptions=st.bands,
            compress=o["compress"],
            tags=tags,
            valid=block.valid if nodata is None and not block.valid.all() else None,
        )
        _write_tif(
            self.out / "masks" / f"{chip_id}.tif",
            mask[np.newaxis].astype(schema.mask_dtype, copy=False),
            transform=transform,
            crs=crs,
            nodata=schema.ignore_index,
            descriptions=["class"],
            colormap=cmap,
            compress=o["compress"],
            tags=tags,
        )

    # -- phase 3: split ------------------------------------------------------------------------------
    @_unlock_on_error
    def split(self) -> pd.DataFrame:
        """Assign kept chips to trn/val/tst (removing chips the split drops); returns the chip plan."""
        assert self.candidates is not None and self.schema is not None
        o = self.opts
        table = self.candidates
        for r in DROP_REASONS[:-1]:
            self.dropped[r] = int((table["reason"] == r).sum())
        kept = table[table["reason"] == ""].copy()
        if kept.empty:
            raise EmptyInputError(
                f"No chip passed the filters ({self._drop_text()} of {len(table)} candidates). "
                f"Relax --min-annotated/--max-nodata/--class-proportion, or check that the labels "
                f"cover the raster."
            )
        fractions = {"trn": 1.0 - o["val"] - o["test"], "val": o["val"], "tst": o["test"]}
        method = o["split_method"]
        if method == "auto":
            method = "scene" if all(st.scene.split for st in self.states) else "blocks"
        self.split_method = method
        overlapping = o["stride"] < o["size"]
        if method == "scene":
            missing = [st.scene.image.name for st in self.states if not st.scene.split]
            if missing:
                raise ConfigError(
                    f"split_method 'scene' needs a split (trn/val/tst) for every scene; missing for "
                    f"{missing}. Add a split column to the scenes CSV or use --split-method blocks."
                )
            by_id = {st.id: st.scene.split for st in self.states}
            kept["split"] = kept["scene"].map(by_id)
            self._warn_scene_overlap()
        elif method == "blocks":
            kept["split"] = self._block_split(kept, fractions)
        elif method in ("random", "stratified"):
            if method == "random":
                kept["split"] = random_split(len(kept), fractions, o["seed"])
            else:
                kept["split"] = stratified_split(_strata(kept, self.schema), fractions, o["seed"])
            if overlapping:
                self.leaky = True
                log.warning(
                    "LEAKY SPLIT: %s split of overlapping chips (stride %d < size %d): trn and val chips "
                    "share pixels, so validation scores will be optimistic. Use --split-method blocks for a "
                    "leakage-safe split.",
                    method,
                    o["stride"],
                    o["size"],
                )
        else:  # pragma: no cover - checked in _check_options
            raise ConfigError(f"unknown split method {method!r}")
        straddle = kept["split"] == "straddle"
        self.dropped["straddle"] = int(straddle.sum())
        if straddle.any():
            log.info(
                "Dropped %d of %d chips straddling split blocks of two splits (they would share pixels "
                "across splits); a larger --block-size or a stride dividing it keeps more",
                int(straddle.sum()),
                len(kept),
            )
        plan = kept[~straddle].copy()
        if plan.empty:
            raise EmptyInputError("Every chip straddles two splits; use a larger --block-size")
        counts = plan["split"].value_counts()
        for s, frac in fractions.items():
            if frac > 0 and counts.get(s, 0) == 0:
                log.warning(
                    "The %s split is empty (%d blocks/chips in all); use a smaller --block-size, more "
                    "scenes, or another --split-method",
                    s,
                    len(plan),
                )
        plan["chip_id"] = [
            _chip_id(sc, r, c)
            for sc, r, c in zip(plan["scene"], plan["row_off"], plan["col_off"], strict=True)
        ]
        for sc, r, c in kept.loc[straddle.to_numpy(), ["scene", "row_off", "col_off"]].itertuples(
            index=False
        ):
            for sub in ("images", "masks"):  # written during the scan, dropped by the split
                (self.out / sub / f"{_chip_id(sc, r, c)}.tif").unlink(missing_ok=True)
        plan["image"] = "images/" + plan["chip_id"] + ".tif"
        plan["mask"] = "masks/" + plan["chip_id"] + ".tif"
        self.plan = plan.reset_index(drop=True)
        # the candidates table records every decision (the analyze stage reads it)
        table = table.copy()
        table["split"] = ""
        table.loc[kept.index, "split"] = kept["split"]
        table.loc[kept.index[straddle.to_numpy()], "reason"] = "straddle"
        self.candidates = table
        log.info(
            "Splits (%s): %s; dropped: %s",
            method,
            ", ".join(f"{k} {v}" for k, v in counts.items()),
            self._drop_text(),
        )
        return self.plan

    def _drop_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none dropped"

    def _block_split(self, kept: pd.DataFrame, fractions: Mapping[str, float]) -> np.ndarray:
        o = self.opts
        if o["block_size"]:
            return self._block_split_at(kept, fractions, int(o["block_size"]))
        # default block size: the largest of 4, 3, 2 chip sizes whose split gives every requested split a
        # share of at least half its target (small scenes have few large blocks); logged and recorded
        wanted = {s: f for s, f in fractions.items() if f > 0}
        splits = np.empty(0)
        for factor in (4, 3, 2):
            splits = self._block_split_at(kept, fractions, factor * o["size"])
            kept_splits = splits[splits != "straddle"]
            n = max(1, len(kept_splits))
            if all((kept_splits == s).sum() / n >= 0.5 * f for s, f in wanted.items()):
                break
        if self._block_info["block_size_px"] != 4 * o["size"]:
            log.info(
                "Split blocks of %d px (not the default %d): larger blocks could not give every split its share "
                "of chips in these scenes",
                self._block_info["block_size_px"],
                4 * o["size"],
            )
        return splits

    def _block_split_at(
        self, kept: pd.DataFrame, fractions: Mapping[str, float], block_px: int
    ) -> np.ndarray:
        o = self.opts
        ref = self.states[0].grid
        if block_px < o["size"]:
            raise ConfigError(f"block_size ({block_px} px) must be at least the chip size ({o['size']} px)")
        if any_rotated([st.grid for st in self.states]):
            return self._pixel_block_split(kept, fractions, block_px)
        bw, bh = block_px * ref.res[0], block_px * ref.res[1]
        bounds = kept[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype="float64").copy()
        from rasterlearn.io.vector import transform_bounds

        for st in self.states[1:]:
            if st.grid.crs is not None and ref.crs is not None and not st.grid.crs.equals(ref.crs):
                sel = (kept["scene"] == st.id).to_numpy()
                for i in np.flatnonzero(sel):
                    bounds[i] = transform_bounds(tuple(bounds[i]), st.grid.crs, ref.crs)
        # blocks are anchored at the first scene's top-left corner, so they follow its chip lattice when the
        # block size is a multiple of the stride; y runs downwards like rows
        x0, y0 = ref.transform.c, ref.transform.f
        local = np.column_stack([bounds[:, 0] - x0, y0 - bounds[:, 3], bounds[:, 2] - x0, y0 - bounds[:, 1]])
        splits, blocks = block_split(local, (bw, bh), fractions, o["seed"])
        self._block_info = {
            "block_size_px": block_px,
            "block_size_crs": [bw, bh],
            "blocks": len(blocks),
            "blocks_per_split": {s: sum(1 for v in blocks.values() if v == s) for s in SPLITS},
        }
        return splits

    def _pixel_block_split(
        self, kept: pd.DataFrame, fractions: Mapping[str, float], block_px: int
    ) -> np.ndarray:
        # rotated grids: map-space envelopes of tilted chips overlap, so blocks are planned in the first
        # scene's pixel space, where a chip is exactly its window (see rasterlearn.chip_blocks)
        ref = self.states[0].grid
        local = pixel_space_bounds(
            kept["scene"].tolist(),
            kept["row_off"].to_numpy(),
            kept["col_off"].to_numpy(),
            int(self.opts["size"]),
            {st.id: st.grid for st in self.states},
            ref,
        )
        splits, blocks = block_split(local, (float(block_px), float(block_px)), fractions, self.opts["seed"])
        self._block_info = {
            "block_size_px": block_px,
            "block_size_crs": [block_px * ref.res[0], block_px * ref.res[1]],
            "blocks": len(blocks),
            "blocks_per_split": {s: sum(1 for v in blocks.values() if v == s) for s in SPLITS},
            "block_space": "pixels (rotated grid)",
        }
        log.info("Rotated/sheared grid: split blocks of %d px are planned in pixel space", block_px)
        return splits

    def _warn_scene_overlap(self) -> None:
        from shapely.geometry import box

        from rasterlearn.io.vector import transform_bounds

        ref = self.states[0].grid.crs
        foot = []
        for st in self.states:
            b = st.grid.bounds
            if ref is not None and st.grid.crs is not None and not st.grid.crs.equals(ref):
                b = transform_bounds(b, st.grid.crs, ref)
            foot.append(box(*b))
        for i, sa in enumerate(self.states):
            for j in range(i + 1, len(self.states)):
                sb = self.states[j]
                if sa.scene.split != sb.scene.split and foot[i].intersection(foot[j]).area > 0:
                    self.leaky = True
                    log.warning(
                        "LEAKY SPLIT: scenes %s (%s) and %s (%s) overlap spatially",
                        sa.id,
                        sa.scene.split,
                        sb.id,
                        sb.scene.split,
                    )

    # -- phase 4: write ------------------------------------------------------------------------------
    @property
    def n_to_write(self) -> int:
        return 0 if self.plan is None else len(self.plan)

    @_unlock_on_error
    def write(self, progress: Progress | None = None) -> int:
        """Write every planned chip that is not on disk yet (image first, then mask; both atomic).

        Chips passing the filters are already written during :meth:`scan` (one read per window); this
        phase completes what an earlier, interrupted run left (scan results reused from ``.scan/``)."""
        with gdal_cache(self.opts["cache_mb"]):
            return self._write_all(progress)

    def _chip_done(self, chip_id: str) -> bool:
        return (self.out / "images" / f"{chip_id}.tif").exists() and (
            self.out / "masks" / f"{chip_id}.tif"
        ).exists()

    def _write_all(self, progress: Progress | None) -> int:
        assert self.plan is not None and self.schema is not None
        import rasterio.crs

        schema = self.schema
        cmap = _colormap(schema)
        for st in self.states:
            rows = self.plan[self.plan["scene"] == st.id]
            if rows.empty:
                continue
            todo = [
                r
                for r in rows.itertuples(index=False)
                if not ((self.out / r.image).exists() and (self.out / r.mask).exists())
            ]
            self.skipped += sum(1 for cid in rows["chip_id"] if cid not in self._fresh) - len(todo)
            if progress and len(rows) > len(todo):
                progress(len(rows) - len(todo))
            if not todo:
                continue
            crs = None if st.grid.crs is None else rasterio.crs.CRS.from_wkt(st.grid.crs.to_wkt())
            labels = self._open_labels(st, schema)
            try:
                with st.scene.open(st.band_indexes) as reader:
                    nodata = reader.nodata
                    for r in todo:
                        win = Window(int(r.row_off), int(r.col_off), int(r.height), int(r.width))
                        block = reader.read(win)
                        mask = apply_validity(labels.mask(win), block.valid, schema.ignore_index)
                        self._write_chip(st, win, r.chip_id, block, mask, crs, nodata, cmap)
                        self.written += 1
                        if progress:
                            progress(1)
            finally:
                if isinstance(labels, LabelRaster):
                    labels.close()
        log.info("Wrote %d chips, %d already on disk", self.written, self.skipped)
        return self.written

    # -- phase 5: manifest, statistics, dataset.json -----------------------------------------------
    @_unlock_on_error
    def finish(self) -> ChipResult:
        assert self.plan is not None and self.schema is not None and self.candidates is not None
        o, schema = self.opts, self.schema
        px_cols = [f"px_{c}" for c in schema.codes]
        cols = [
            "chip_id",
            "image",
            "mask",
            "scene",
            "split",
            "row_off",
            "col_off",
            "height",
            "width",
            "minx",
            "miny",
            "maxx",
            "maxy",
            "nodata_fraction",
            "annotated_fraction",
            "labelled_fraction",
            *px_cols,
            "px_ignore",
        ]
        manifest = self.plan[cols].copy()
        _atomic_csv(self.out / "manifest.csv", manifest)
        _atomic_csv(self.out / "candidates.csv", self.candidates)
        with gdal_cache(o["cache_mb"]):
            stats = self._statistics(manifest)
        ref = self.states[0]
        crs = ref.grid.crs
        dtypes = sorted({st.dtype for st in self.states})
        dtype = str(np.result_type(*[np.dtype(d) for d in dtypes]))
        if len(dtypes) > 1:
            log.warning(
                "Scenes have different dtypes %s; chips keep each scene's dtype, dataset dtype is %s",
                dtypes,
                dtype,
            )
        counts = manifest["split"].value_counts()
        scenes = []
        for st in self.states:
            d = st.scene.to_dict()
            d.update(
                {
                    "id": st.id,
                    "dtype": st.dtype,
                    "nodata": st.nodata,
                    "bands": st.bands,
                    "epsg": st.grid.epsg,
                    "crs": None if st.grid.crs is None else st.grid.crs.to_wkt(),
                    "resolution": list(st.grid.res),
                    "shape": [st.grid.height, st.grid.width],
                    "attribute": self._attribute(st),
                    "labels_note": st.labels_note,
                    "chips": int((manifest["scene"] == st.id).sum()),
                    "candidates": int((self.candidates["scene"] == st.id).sum()),
                    **st.extra,
                }
            )
            scenes.append(d)
        dataset = {
            "format": FORMAT,
            "params": self.params,
            "params_hash": self.params_hash,
            "chip_size": o["size"],
            "stride": o["stride"],
            "bands": ref.bands,
            "band_indexes": ref.band_indexes,
            "timesteps": ref.scene.timesteps,
            "dtype": dtype,
            "nodata": ref.nodata,
            "mask_dtype": schema.mask_dtype,
            "schema": schema.to_dict(),
            "statistics": [s.to_dict() for s in stats],
            "normalization": Normalization.from_stats([s.to_dict() for s in stats], "zscore").to_dict(),
            "crs": None if crs is None else crs.to_wkt(),
            "epsg": ref.grid.epsg,
            "resolution": list(ref.grid.res),
            "crs_units": None if crs is None or not crs.axis_info else crs.axis_info[0].unit_name,
            "scenes": scenes,
            "splits": {s: int(counts.get(s, 0)) for s in SPLITS},
            "split_method": self.split_method,
            "leaky": self.leaky,
            "blocks": self._block_info or None,
            "dropped": dict(self.dropped),
            "candidates": len(self.candidates),
            "edge": "pad",
            "filters": {
                "min_annotated": o["min_annotated"],
                "max_nodata": o["max_nodata"],
                "class_proportion": {str(k): v for k, v in o["class_proportion"].items()},
            },
        }
        atomic_write_json(self.out / "dataset.json", dataset, default=json_default)
        log.info(
            "Dataset ready: %s (%s)", self.out, ", ".join(f"{k} {v}" for k, v in dataset["splits"].items())
        )
        release_lock(self.requested_out)
        return ChipResult(self.out, manifest, dataset, self.written, self.skipped)

    def _statistics(self, manifest: pd.DataFrame) -> list[BandStats]:
        """Nodata-aware band statistics over the trn chips' valid pixels (sampled windows, seeded)."""
        o = self.opts
        chosen = manifest[manifest["split"] == "trn"]
        if chosen.empty:
            log.warning("No trn chips: band statistics are computed on all chips")
            chosen = manifest
        rng = np.random.default_rng(o["seed"])
        parts: list[list[BandStats]] = []
        for st in self.states:
            rows = chosen[chosen["scene"] == st.id]
            if rows.empty:
                continue
            if len(rows) > o["stats_windows"]:
                rows = rows.iloc[np.sort(rng.choice(len(rows), o["stats_windows"], replace=False))]
            wins = []
            for r in rows.itertuples(index=False):
                w = Window(int(r.row_off), int(r.col_off), int(r.height), int(r.width)).clip(*st.grid.shape)
                if not w.is_empty:
                    wins.append(w)
            with st.scene.open(st.band_indexes) as reader:
                try:
                    parts.append(
                        band_statistics(reader, sample_size=o["stats_sample"], windows=wins, seed=o["seed"])
                    )
                except EmptyInputError:
                    log.warning("%s: no valid pixel in its trn chips for statistics", st.id)
        if not parts:
            raise EmptyInputError("No valid pixels in the training chips to compute band statistics")
        return combine_stats(parts, self.states[0].bands)


def combine_stats(parts: Sequence[Sequence[BandStats]], names: Sequence[str]) -> list[BandStats]:
    """Pool per-scene statistics: exact count/mean/std/min/max; p2/p98 as count-weighted means (approximate)."""
    out = []
    for k, name in enumerate(names):
        items = [p[k] for p in parts]
        n = np.array([s.count for s in items], dtype="float64")
        mean = np.array([s.mean for s in items])
        std = np.array([s.std for s in items])
        total = n.sum()
        m = float((n * mean).sum() / total)
        var = float((n * (std**2 + (mean - m) ** 2)).sum() / total)
        out.append(
            BandStats(
                name,
                int(total),
                m,
                math.sqrt(max(var, 0.0)),
                min(s.min for s in items),
                max(s.max for s in items),
                float((n * [s.p2 for s in items]).sum() / total),
                float((n * [s.p98 for s in items]).sum() / total),
            )
        )
    return out


def _chip_id(scene: str, row_off: int, col_off: int) -> str:
    return f"{scene}_r{int(row_off):06d}_c{int(col_off):06d}"


def _window_row(
    st: _SceneState,
    win: Window,
    mask: np.ndarray,
    valid: np.ndarray,
    schema: ClassSchema,
    codes: Sequence[int],
) -> dict[str, Any]:
    total = win.height * win.width
    counts = np.bincount(mask.ravel(), minlength=max([*codes, schema.ignore_index]) + 1)
    ignore = int(counts[schema.ignore_index])
    labelled = total - ignore
    bg = int(counts[schema.background]) if schema.background is not None and schema.background in codes else 0
    minx, miny, maxx, maxy = st.grid.window_bounds(win)
    row: dict[str, Any] = {
        "scene": st.id,
        "row_off": win.row_off,
        "col_off": win.col_off,
        "height": win.height,
        "width": win.width,
        "minx": minx,
        "miny": miny,
        "maxx": maxx,
        "maxy": maxy,
        "nodata_fraction": 1.0 - float(valid.sum()) / total,
        "annotated_fraction": (labelled - bg) / total,
        "labelled_fraction": labelled / total,
    }
    for c in codes:
        row[f"px_{c}"] = int(counts[c])
    row["px_ignore"] = ignore
    return row


def _strata(kept: pd.DataFrame, schema: ClassSchema) -> list[str]:
    """Stratum of each chip: the rarest (by total pixels) non-background class present, else 'background'."""
    fg = [c for c in schema.codes if c != schema.background]
    totals = {c: int(kept[f"px_{c}"].sum()) for c in fg}
    order = sorted(fg, key=lambda c: totals[c])
    out = []
    for row in kept[[f"px_{c}" for c in order]].to_numpy():
        present = [c for c, v in zip(order, row, strict=True) if v > 0]
        out.append(str(present[0]) if present else "background")
    return out


def _resolve_out(out: Path, params_hash: str, overwrite: bool) -> Path:
    """The folder to write: ``out`` when new/empty/same parameters; else a sibling ``out-<hash>``."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return out
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --out")
    existing = _existing_hash(out)
    if existing is None:
        raise OutputError(
            f"{out} exists, is not empty and is not a rasterlearn chip dataset; choose another --out "
            f"(nothing was written)"
        )
    if overwrite:
        log.warning("Overwriting the chip dataset in %s", out)
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return out
    if existing == params_hash:
        log.info("Resuming the chip dataset in %s (same parameters)", out)
        return out
    alt = out.with_name(f"{out.name}-{params_hash[:8]}")
    log.warning(
        "%s holds a chip dataset made with other parameters (%s); writing this one (%s) to %s instead. "
        "Pass overwrite=True (CLI: --overwrite) to replace it.",
        out,
        existing,
        params_hash,
        alt,
    )
    if alt.exists() and _existing_hash(alt) not in (
        None,
        params_hash,
    ):  # pragma: no cover - hash prefix clash
        raise OutputError(f"{alt} exists with other parameters; remove it or choose another --out")
    return alt


def _existing_hash(out: Path) -> str | None:
    for name in (_PARAMS_FILE, "dataset.json"):
        p = out / name
        if p.exists():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                return str(json.loads(p.read_text(encoding="utf-8")).get("params_hash"))
    return None


_DEFAULTS: dict[str, Any] = {
    "size": 256,
    "stride": None,
    "bands": None,
    "attribute": None,
    "burn_value": 1,
    "layer": None,
    "schema": None,
    "ignore_index": None,
    "all_touched": False,
    "overlap": "last",
    "priority": None,
    "label_areas": None,
    "unknown": "error",
    "label_band": 1,
    "split_method": "auto",
    "val": 0.15,
    "test": 0.15,
    "block_size": None,
    "min_annotated": 0.0,
    "max_nodata": 100.0,
    "class_proportion": None,
    "seed": 0,
    "compress": "deflate",
    "stats_sample": 200_000,
    "stats_windows": 256,
    "overwrite": False,
    "cache_mb": 64,
}


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ConfigError(f"Unknown chips options {sorted(unknown)}; valid: {', '.join(sorted(_DEFAULTS))}")
    o = {**_DEFAULTS, **{k: v for k, v in options.items() if v is not None or k in ("stride",)}}
    o["size"] = int(o["size"])
    o["stride"] = int(o["stride"]) if o["stride"] is not None else o["size"]
    if o["size"] <= 0 or o["stride"] <= 0:
        raise ConfigError(
            f"chip size and stride must be positive, got size={o['size']}, stride={o['stride']}"
        )
    if o["stride"] > o["size"]:
        raise ConfigError(
            f"stride ({o['stride']}) is larger than the chip size ({o['size']}): pixels between chips "
            f"would never be used; use a stride <= {o['size']}"
        )
    if o["bands"] is not None:
        o["bands"] = [
            int(b) if isinstance(b, int) or str(b).strip().isdigit() else str(b) for b in o["bands"]
        ]
    if isinstance(o["schema"], str | Path):
        o["schema"] = ClassSchema.load(o["schema"])
    elif isinstance(o["schema"], Mapping):
        o["schema"] = ClassSchema.from_dict(o["schema"])
    choices = {
        "overlap": ("last", "priority"),
        "unknown": ("error", "ignore"),
        "split_method": ("auto", "blocks", "random", "stratified", "scene"),
        "compress": ("deflate", "lzw", "zstd", "none"),
    }
    for key, allowed in choices.items():
        if o[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {o[key]!r}")
    la = o["label_areas"]
    if la is not None and la not in ("features", "extent"):
        if not Path(str(la)).exists():
            raise InputNotFoundError(
                f"label_areas {la!r} is neither 'features', 'extent' nor an existing polygon file"
            )
        o["label_areas"] = str(Path(str(la)).resolve())
    for key in ("val", "test"):
        o[key] = float(o[key])
        if not 0.0 <= o[key] < 1.0:
            raise ConfigError(f"{key} fraction must be in [0, 1), got {o[key]}")
    if o["val"] + o["test"] >= 1.0:
        raise ConfigError(
            f"val ({o['val']}) + test ({o['test']}) leave no training chips; keep their sum below 1"
        )
    for key in ("min_annotated", "max_nodata"):
        o[key] = float(o[key])
        if not 0.0 <= o[key] <= 100.0:
            raise ConfigError(f"{key} is a percent in 0..100, got {o[key]}")
    o["class_proportion"] = parse_class_proportion(o["class_proportion"])
    if o["priority"] is not None:
        o["priority"] = [int(p) for p in o["priority"]]
    if o["block_size"] is not None:
        o["block_size"] = int(o["block_size"])
    o["seed"] = int(o["seed"])
    return o


def make_chips(
    scenes: Sequence[Scene],
    out: str | Path,
    *,
    size: int = 256,
    stride: int | None = None,
    bands: Sequence[int | str] | None = None,
    attribute: str | None = None,
    burn_value: int = 1,
    layer: str | None = None,
    schema: ClassSchema | str | Path | None = None,
    ignore_index: int | None = None,
    all_touched: bool = False,
    overlap: OverlapRule = "last",
    priority: Sequence[int] | None = None,
    label_areas: LabelAreasMode | str | Path | None = None,
    unknown: UnknownPolicy = "error",
    label_band: int = 1,
    split_method: SplitMethod = "auto",
    val: float = 0.15,
    test: float = 0.15,
    block_size: int | None = None,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | str | None = None,
    seed: int = 0,
    compress: Compression = "deflate",
    stats_sample: int = 200_000,
    stats_windows: int = 256,
    overwrite: bool = False,
    cache_mb: int = 64,
    progress: Progress | None = None,
) -> ChipResult:
    """Cut scenes and their labels into a chip dataset (see the module docstring for the layout).

    Args:
        scenes: images with vector labels or label rasters (see :class:`Scene`, :func:`read_scenes_csv`).
        out: dataset folder. Same parameters: resumed (finished chips skipped). Other parameters: a new
            folder ``<out>-<hash>`` is written instead, unless ``overwrite``.
        size, stride: chip size and step in pixels (stride < size: overlapping chips). Edge chips are padded
            with nodata (image) and ignore (mask), never dropped.
        bands: 1-based band indexes or descriptions (default: all but alpha).
        attribute: class attribute of the vector labels (numbers, or text mapped by the schema); ``None``
            burns ``burn_value``.
        layer: vector layer name.
        schema: a :class:`ClassSchema` or a YAML/CSV file; default: inferred from the label values.
        ignore_index: the ignore code (default: the schema's, 255; 65535 when codes reach 255).
        all_touched, overlap, priority, label_areas, unknown: rasterization rules
            (see :class:`rasterlearn.labels.VectorLabels`); ``label_areas`` may also be a polygon file.
        label_band: band of label rasters.
        split_method: ``auto`` (``scene`` when every scene has a split, else ``blocks``), ``blocks``,
            ``random``, ``stratified`` or ``scene``.
        val, test: fractions of chips for validation and test (trn gets the rest).
        block_size: spatial block size in pixels for ``blocks`` (default 4 x size).
        min_annotated: minimum percent of non-background labelled pixels per chip.
        max_nodata: maximum percent of nodata pixels per chip (chips without any valid pixel always go).
        class_proportion: ``{code: minimum percent of the chip's labelled pixels}``.
        seed: seed of splits and statistics sampling.
        compress: chip compression.
        stats_sample, stats_windows: pixels per band and trn windows per scene sampled for statistics.
        overwrite: replace an existing dataset in ``out``.
        cache_mb: GDAL block cache while reading (bounds memory; does not change the output).
        progress: called with the number of windows scanned / chips written (scan total + write total).

    Raises:
        InputError and subclasses for bad inputs (see :mod:`rasterlearn.errors`), OutputError.
    """
    job = ChipJob(
        scenes,
        out,
        size=size,
        stride=stride,
        bands=bands,
        attribute=attribute,
        burn_value=burn_value,
        layer=layer,
        schema=schema,
        ignore_index=ignore_index,
        all_touched=all_touched,
        overlap=overlap,
        priority=priority,
        label_areas=label_areas,
        unknown=unknown,
        label_band=label_band,
        split_method=split_method,
        val=val,
        test=test,
        block_size=block_size,
        min_annotated=min_annotated,
        max_nodata=max_nodata,
        class_proportion=class_proportion,
        seed=seed,
        compress=compress,
        stats_sample=stats_sample,
        stats_windows=stats_windows,
        overwrite=overwrite,
        cache_mb=cache_mb,
    )
    job.prepare()
    job.scan(progress)
    job.split()
    job.write(progress)
    return job.finish()
