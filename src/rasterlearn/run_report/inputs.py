"""What a run report is built from: :class:`ReportInputs` (the files the stages wrote) and reading them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ReportInputs:
    """What the run produced (any part may be missing; its section is then left out)."""

    title: str = "rasterlearn run"
    dataset: Path | None = None
    train_dir: Path | None = None
    scenes: list[dict[str, Any]] = field(default_factory=list)
    maps: dict[str, Path] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    polygons: dict[str, Path] = field(default_factory=dict)
    test_chips: Path | None = None
    map_metrics: dict[str, tuple[Path, str]] = field(default_factory=dict)
    features: dict[str, dict[str, Path]] = field(default_factory=dict)
    features_note: str = ""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sample_chips: int = 6
    quicklook_size: int = 1024
    note: str = ""


def load_json(path: Path | None) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when there is no such file."""
    if path is None or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def class_schema(inputs: ReportInputs, dataset: dict[str, Any] | None) -> Any:
    """The run's classes: the model package's schema, else the chip dataset's, else None."""
    from rasterlearn.labels import ClassSchema

    if inputs.train_dir is not None and (inputs.train_dir / "model.json").exists():
        meta = json.loads((inputs.train_dir / "model.json").read_text(encoding="utf-8"))
        if meta.get("schema"):
            return ClassSchema.from_dict(meta["schema"])
    if dataset and dataset.get("schema"):
        return ClassSchema.from_dict(dataset["schema"])
    return None
