"""Scenes: an image (or the dates of a multi-date scene) with its labels; the scenes CSV."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterlearn.errors import ConfigError, EmptyInputError, InputError, InputNotFoundError
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.stack import NodataPolicy, StackReader
from rasterlearn.labels import is_raster_path

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
