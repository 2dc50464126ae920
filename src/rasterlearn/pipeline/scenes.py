"""The run's scenes with absolute paths and unique ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterlearn.engine.journal import input_identity
from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.pipeline.config import RunConfig, _base, _resolve


@dataclass
class ResolvedScene:
    id: str
    image: Path
    labels: Path | None
    label_raster: Path | None
    attribute: str | None
    layer: str | None
    split: str | None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None or self.label_raster is not None

    @property
    def heldout(self) -> bool:
        return self.split == "tst"

    def identity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": input_identity(self.image),
            "labels": input_identity(self.labels),
            "label_raster": input_identity(self.label_raster),
            "attribute": self.attribute,
            "layer": self.layer,
            "split": self.split,
        }

    def to_chips_scene(self) -> Any:
        from rasterlearn.chips import Scene

        return Scene(
            image=self.image,
            labels=self.labels,
            label_raster=self.label_raster,
            attribute=self.attribute,
            split=self.split,
            layer=self.layer,
            id=self.id,
        )


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def resolve_scenes(cfg: RunConfig) -> list[ResolvedScene]:
    """The config's scenes with absolute paths and unique ids (files must exist)."""
    from rasterlearn.chips import read_scenes_csv
    from rasterlearn.labels import is_raster_path

    out: list[ResolvedScene] = []
    if isinstance(cfg.scenes, str):
        csv_path = _resolve(cfg, cfg.scenes)
        assert csv_path is not None
        for s in read_scenes_csv(csv_path):
            out.append(
                ResolvedScene(s.id or "", s.image, s.labels, s.label_raster, s.attribute, s.layer, s.split)
            )
    else:
        for i, e in enumerate(cfg.scenes):
            image = _resolve(cfg, e.image)
            labels = _resolve(cfg, e.labels)
            label_raster = _resolve(cfg, e.label_raster)
            for what, p in (("image", image), ("labels", labels), ("label_raster", label_raster)):
                if p is not None and not p.exists():
                    raise InputNotFoundError(
                        f"scenes[{i}].{what}: {p} not found (relative paths are resolved from {_base(cfg)})"
                    )
            if labels is not None and label_raster is None and is_raster_path(labels):
                label_raster, labels = labels, None
            assert image is not None
            out.append(ResolvedScene(e.id or "", image, labels, label_raster, e.attribute, e.layer, e.split))
    seen: dict[str, int] = {}
    for rs in out:
        base = _sanitize(rs.id or rs.image.stem)
        n = seen.get(base, 0)
        seen[base] = n + 1
        rs.id = base if n == 0 else f"{base}_{n + 1}"
        if rs.attribute is None and rs.labels is not None:
            rs.attribute = cfg.classes.attribute
    if len({rs.id for rs in out}) != len(out):
        raise ConfigError(f"Scene ids are not unique: {[rs.id for rs in out]}; give each scene an 'id'")
    return out
