"""``rasterlearn.stages``: every stage's library entry point takes its options model, and one call runs any
stage from a model or a ``--config`` file."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from rasterlearn.errors import ConfigError
from rasterlearn.options import STAGE_OPTIONS, VectorizeOptions
from rasterlearn.stages import STAGE_RUNNERS, run_config, run_stage, stage_runner


def test_every_stage_has_a_runner_taking_its_options_model() -> None:
    """The options model is the signature: ``run_<stage>(options: <X>Options, *, progress=None)``."""
    assert set(STAGE_RUNNERS) == set(STAGE_OPTIONS)
    for command, model in STAGE_OPTIONS.items():
        fn = stage_runner(command)
        assert fn.__name__ == f"run_{command}"
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn)
        assert params[0].name == "options" and hints["options"] is model, command
        assert [p.name for p in params[1:] if p.default is inspect.Parameter.empty] == [], command
        assert "progress" in {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}, command


@pytest.fixture
def class_map(tmp_path: Path) -> Path:
    import rasterio
    from affine import Affine

    data = np.zeros((1, 40, 40), "uint8")
    data[0, 5:20, 5:25] = 1
    data[0, 25:35, 10:30] = 2
    path = tmp_path / "map.tif"
    profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 1, "dtype": "uint8", "nodata": 255}
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform, **profile) as ds:
        ds.write(data)
    return path


def test_run_stage_and_run_config_run_the_stage_the_model_names(class_map: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    done: list[int] = []
    res = run_stage(
        VectorizeOptions(raster=class_map, output=tmp_path / "a.gpkg", exclude="0"), progress=done.append
    )
    a = gpd.read_file(tmp_path / "a.gpkg")
    assert res.count == len(a) == 2 and sorted(a["class_code"]) == [1, 2]
    assert sum(done) == 40 * 40  # the map's pixels, counted between windows

    cfg = tmp_path / "vectorize.yaml"
    cfg.write_text(yaml.safe_dump({"raster": str(class_map), "output": str(tmp_path / "b.gpkg")}))
    res = run_config(cfg, "vectorize", exclude=[0, 2])  # overrides as flags would
    b = gpd.read_file(tmp_path / "b.gpkg")
    assert res.count == len(b) == 1 and list(b["class_code"]) == [1]
    assert a.crs == b.crs and a.geometry[a["class_code"] == 1].iloc[0].equals(b.geometry.iloc[0])


def test_run_stage_refuses_what_is_not_a_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stage options model"):
        run_stage({"raster": "x.tif"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="No stage named 'predikt'"):
        run_config(tmp_path / "x.yaml", "predikt")
    cfg = tmp_path / "v.yaml"
    cfg.write_text("raster: m.tif\n")
    with pytest.raises(ConfigError, match="window_size"):
        run_config(cfg, "vectorize", window_size="big")
