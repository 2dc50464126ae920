"""``--config FILE.yaml`` on every stage command, and the typed options models (:mod:`rasterlearn.options`).

For every command: a YAML file alone (positional arguments included) gives the same outputs as the same
options given as flags; a flag overrides the file; an unknown key or a wrong type is one clear line and exit
code 2; and the options model agrees with the command line option by option, default by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import typer
import yaml
from affine import Affine
from shapely.geometry import Point
from shapely.geometry import box as sbox

from rasterlearn.cli import app, main
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array
from rasterlearn.options import STAGE_OPTIONS, ChipsOptions, PredictOptions, load_options, option_keys
from tests.conftest import write_tif
from tests.test_regression_digests import raster_digest

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
FRONT_END = {"config", "progress"}  # how a run is shown or configured, not what it computes
FILE_ONLY = {
    "chips": {"stats_sample", "stats_windows", "cache_mb"}
}  # options a file may set that have no CLI flag
FILE_ONLY["similarity"] = {"seed"}  # the run YAML's features.seed (the command line samples with 0)
T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)


# ---------------------------------------------------------------------------------------------------------
# the options models are the single truth: every option, name and default, both ways
# ---------------------------------------------------------------------------------------------------------
def _params(command: str) -> dict[str, Any]:
    return {
        p.name: p
        for p in COMMANDS[command].params
        if p.name not in FRONT_END and not getattr(p, "hidden", False)
    }


def _norm(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


@pytest.mark.parametrize("command", sorted(STAGE_OPTIONS))
def test_options_model_and_cli_agree_option_by_option(command: str) -> None:
    model = STAGE_OPTIONS[command]
    params = _params(command)
    to_param = {
        (f.alias or name): model.cli_names.get(f.alias or name, f.alias or name)
        for name, f in model.model_fields.items()
    }
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    # every command-line option and argument has a field ...
    missing = sorted(set(params) - set(to_param.values()))
    assert not missing, f"{command}: CLI options without an options-model field: {missing}"
    # ... and every field an option (or is declared file-only)
    extra = sorted(
        k for k, p in to_param.items() if p not in params and k not in FILE_ONLY.get(command, set())
    )
    assert not extra, f"{command}: options-model fields without a CLI option: {extra}"
    checked: list[str] = []
    for key, pname in to_param.items():
        field = fields[key]
        assert field.description, f"{command}.{key} has no description"
        if pname not in params:
            continue
        param = params[pname]
        cli_default = None if param.default is None or param.required else param.default
        model_default = _norm(field.get_default(call_default_factory=True))
        if model_default == [] and cli_default is None:
            model_default = None  # a repeatable option not given
        assert _norm(cli_default) == model_default, (
            f"{command} --{pname.replace('_', '-')}: CLI default {cli_default!r} != model default {model_default!r}"
        )
        assert getattr(param, "show_default", True) is not False, f"{command} --{pname} hides its default"
        choices = _literal_values(param.type_descriptor.annotation)
        if choices:  # a Literal on both sides: the same choices
            checked.append(key)
            assert sorted(choices) == sorted(_literal_values(field.annotation)), f"{command}.{key}"
    if command in ("predict", "embed", "evaluate"):
        assert checked, "the choices comparison must have run"


def _literal_values(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return [v for a in get_args(annotation) for v in _literal_values(a)]


@pytest.mark.parametrize("command", sorted(STAGE_OPTIONS))
def test_every_stage_command_takes_an_eager_config_option(command: str) -> None:
    config = next(p for p in COMMANDS[command].params if p.name == "config")
    assert config.opts == ["--config"] and config.is_eager
    assert "override" in (config.help or "")  # the precedence is in --help


# ---------------------------------------------------------------------------------------------------------
# errors: one line naming the file, the key and the valid keys / the expected type; exit 2
# ---------------------------------------------------------------------------------------------------------
def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("command", sorted(STAGE_OPTIONS))
def test_unknown_key_is_one_line_naming_file_key_and_valid_keys(command, tmp_path, capsys) -> None:
    cfg = tmp_path / f"{command}.yaml"
    cfg.write_text("output: x.tif\nbogus_key: 1\n")
    assert main([command, "--config", str(cfg)]) == 2
    line = _error_line(capsys)
    assert str(cfg) in line and "unknown key 'bogus_key'" in line
    valid = line.split("valid keys: ", 1)[1]
    assert valid == ", ".join(option_keys(STAGE_OPTIONS[command])) + ")"  # the real keys, listed
    assert "output" in valid


def test_a_bad_file_with_progress_json_is_one_failed_event(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clusterz: 3\n")
    assert main(["cluster", "--config", str(cfg), "--progress", "json"]) == 2
    events = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.strip()]  # only JSON lines
    assert [e["event"] for e in events] == ["failed"]
    assert "unknown key 'clusterz'" in events[0]["message"] and events[0]["exit_code"] == 2


def test_wrong_type_and_bad_choice_name_the_key_and_the_expectation(tmp_path, capsys) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("overlap: lots\nblend: smooth\n")
    assert main(["predict", "--config", str(cfg)]) == 2
    line = _error_line(capsys)
    assert "'overlap': input should be a valid number" in line and "'lots'" in line
    assert "'blend': input should be 'hann', 'center-crop' or 'none'" in line
    cfg.write_text("- not\n- a mapping\n")
    assert main(["reduce", "--config", str(cfg)]) == 2
    assert "expected a mapping" in _error_line(capsys)
    assert main(["reduce", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "Config file not found" in _error_line(capsys)
    cfg.write_text("!!python/object/apply:os.system ['true']\n")
    assert main(["reduce", "--config", str(cfg)]) == 2  # safe_load: no Python objects
    _error_line(capsys)


def test_file_values_in_command_line_form() -> None:
    opts = PredictOptions.model_validate({"raster": "a.tif", "aoi": [1, 2, 3.5, 4], "bands": [4, 3, 2]})
    assert opts.raster == ["a.tif"] and opts.aoi == "1,2,3.5,4" and opts.bands == "4,3,2"
    chips = ChipsOptions.model_validate({"out": "ds", "schema": "s.yaml"})  # former key 'out' still read
    assert chips.output == Path("ds") and chips.schema_file == Path("s.yaml")


def test_every_docs_example_is_valid_for_its_command(tmp_path) -> None:
    text = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    blocks = re.findall(r"```yaml\n# rasterlearn (\w+) --config \S+\n(.*?)```", text, re.S)
    assert sorted(c for c, _ in blocks) == sorted(STAGE_OPTIONS)  # one example per command
    for command, body in blocks:
        cfg = tmp_path / f"{command}.yaml"
        cfg.write_text(body)
        opts = load_options(cfg, STAGE_OPTIONS[command])
        assert opts.model_fields_set, command


def test_file_values_reach_click_in_command_line_form() -> None:
    from rasterlearn.cli._config import _cli_value

    params = {p.name: p for p in COMMANDS["chips"].params}
    assert _cli_value(params["class_proportion"], {"1": 5.0, "2": 10}) == "1:5.0,2:10"
    assert _cli_value(params["priority"], [3, 1]) == "3,1"
    assert _cli_value(params["raster"], "a.tif") == ["a.tif"]  # a repeatable option
    assert _cli_value(params["bands"], [4, 3]) == [4, 3]
    assert _cli_value(params["size"], 64) == 64
    names = STAGE_OPTIONS["evaluate"].model_validate({"truth_names": {1: "developed", 2: "water"}})
    assert names.truth_names == "1=developed,2=water"  # type: ignore[attr-defined]


def test_load_options_is_the_library_entry(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clusters: 4\nparams: {n_init: 2}\n")
    opts = load_options(cfg, STAGE_OPTIONS["cluster"])
    assert opts.clusters == 4 and json.loads(opts.params) == {"n_init": 2}  # type: ignore[attr-defined]
    assert opts.model_fields_set == {"clusters", "params"}


# ---------------------------------------------------------------------------------------------------------
# a YAML file alone == the same options as flags, for every command (tiny inputs)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 32, 32)).astype("float32")
    feats[:, :16] += 2.0  # two separable regions
    out = {"features": write_tif(d / "features.tif", feats)}
    img = rng.integers(0, 200, (3, 64, 64)).astype("uint8")
    out["image"] = write_tif(d / "image.tif", img, nodata=255)
    # points over the feature raster (x 500000..500320, y 3999680..4000000): class 1 north, 2 south
    pts = [Point(500_005 + 20 * i, 3_999_995 - 20 * j) for i in range(16) for j in range(16)]
    cls = [1 if p.y > 3_999_840 else 2 for p in pts]
    gpd.GeoDataFrame({"cls": cls}, geometry=pts, crs="EPSG:32633").to_file(d / "points.gpkg")
    out["points"] = d / "points.gpkg"
    polys = [
        sbox(500_000 + 40 * i, 3_999_360 + 40 * j, 500_030 + 40 * i, 3_999_390 + 40 * j)
        for i in range(16)
        for j in range(16)
    ]
    pc = [1 + (i % 3) for i in range(len(polys))]
    gpd.GeoDataFrame({"cls": pc}, geometry=polys, crs="EPSG:32633").to_file(d / "polys.gpkg")
    out["polys"] = d / "polys.gpkg"
    cmap = np.zeros((40, 48), "uint8")
    cmap[5:20, 5:30] = 1
    cmap[25:38, 10:14] = 2
    cmap[30, 40] = 1  # one-pixel polygon (dropped by min_area 2 px)
    grid = Grid(40, 48, T, "EPSG:32633")
    names = {0: "background", 1: "field", 2: "road"}
    out["map"] = write_array(d / "map.tif", cmap[None], grid, nodata=255, category_names=names)
    truth = cmap.copy()
    truth[5:10, 5:30] = 2
    truth[0:3, :] = 9  # ignored below
    out["truth"] = write_array(d / "truth.tif", truth[None], grid, nodata=None)
    return out


def _yaml(path: Path, data: dict[str, Any]) -> Path:
    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v

    path.write_text(yaml.safe_dump({k: plain(v) for k, v in data.items()}))
    return path


def _flags(data: dict[str, Any], positional: list[str]) -> list[str]:
    """The same options as command-line arguments (positional ones first)."""
    args = [_str(data[k]) for k in positional]
    for k, v in data.items():
        if k in positional:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif isinstance(v, dict):
            args += [flag, json.dumps(v)]
        else:
            args += [flag, _str(v)]
    return args


def _str(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


def _package(tmp: Path) -> Path:
    from tests.test_predict import _package as package

    return package(tmp)


def _metrics(path: Path) -> Any:
    m = json.loads(path.read_text())
    return {k: v for k, v in m.items() if k not in ("inputs", "files", "map", "truth", "created")}


def _polygons(path: Path) -> Any:
    df = gpd.read_file(path, layer=path.stem)
    return sorted(zip(df.class_code, df.pixels, df.geometry.to_wkb(), strict=True))


def _chips(path: Path) -> Any:
    return (path / "manifest.csv").read_text(), json.loads((path / "dataset.json").read_text())["splits"]


def _case(
    name: str, inputs: dict[str, Path], tmp: Path
) -> tuple[dict[str, Any], list[str], Callable[[Path], Any]]:
    """Options (non-defaults that change the output), positional keys, and what to compare of an output."""
    i = inputs
    if name == "chips":
        data = {"raster": [i["image"]], "labels": [i["polys"]], "attribute": "cls", "size": 32, "stride": 16}
        data |= {"split_method": "random", "val": 0.5, "seed": 3, "bands": [3, 1], "overlap": "priority"}
        data |= {"priority": [3, 1, 2], "compress": "lzw"}
        return {k: v for k, v in data.items()}, [], _chips
    if name == "predict":
        b = (500_000, 4_000_000 - 640, 500_320, 4_000_000)
        data = {"model": _package(tmp), "raster": i["image"], "overlap": 0.5, "aoi": list(b), "threads": 1}
        data |= {"blocksize": 32, "blend": "center-crop"}
        return data, ["model", "raster"], raster_digest
    if name == "embed":
        data = {"raster": i["image"], "model": "resnet18", "no_pretrained": True, "seed": 3, "size": 32}
        data |= {
            "stride": 16,
            "input_size": 32,
            "layer": 2,
            "device": "cpu",
            "bands": [3, 2, 1],
            "storage": "float16",
        }
        return data, ["raster"], raster_digest
    if name == "reduce":
        data = {"raster": i["features"], "components": 2, "bands": [1, 2, 3], "sample_size": 500, "seed": 1}
        return data, ["raster"], raster_digest
    if name == "cluster":
        data = {
            "raster": i["features"],
            "clusters": 3,
            "sample_size": 500,
            "seed": 2,
            "params": {"n_init": 2},
        }
        return data, ["raster"], raster_digest
    if name == "similarity":
        data = {
            "raster": i["features"],
            "references": i["points"],
            "mode": "max",
            "bands": [1, 2],
            "rate": 0.5,
        }
        return data, ["raster"], raster_digest
    if name == "classify":
        data = {"raster": i["features"], "labels": i["points"], "attribute": "cls", "method": "extra_trees"}
        data |= {"cv": "random", "folds": 2, "params": {"n_estimators": 5}, "seed": 4}
        return data, ["raster"], raster_digest
    if name == "evaluate":
        data = {"map": i["map"], "truth": i["truth"], "ignore": [9], "class_match": "code"}
        return data, ["map"], _metrics
    assert name == "vectorize"
    data = {"raster": i["map"], "min_area": 2, "area_unit": "pixels", "exclude": [0], "window_size": 16}
    return data, ["raster"], _polygons


_EXT = {"chips": "", "evaluate": ".json", "vectorize": ".gpkg"}


@pytest.mark.parametrize("command", sorted(STAGE_OPTIONS))
def test_yaml_alone_equals_the_same_run_with_flags(command, inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data, positional, view = _case(command, inputs, tmp_path)
    ext = _EXT.get(command, ".tif")
    by_flags, by_file = tmp_path / f"flags{ext}", tmp_path / f"file{ext}"
    assert main(["-q", command, *_flags(data, positional), "-o", str(by_flags)]) == 0
    cfg = _yaml(tmp_path / f"{command}.yaml", {**data, "output": by_file})
    assert main(["-q", command, "--config", str(cfg)]) == 0
    assert view(by_file) == view(by_flags)


def test_a_flag_overrides_the_file_and_a_positional_argument_too(inputs, tmp_path) -> None:
    out = tmp_path / "pca.tif"
    cfg = _yaml(tmp_path / "r.yaml", {"raster": tmp_path / "missing.tif", "components": 2, "output": out})
    assert main(["-q", "reduce", str(inputs["features"]), "--config", str(cfg), "-k", "1"]) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 1  # -k 1 beat the file's components: 2; RASTER beat the file's raster
    out.unlink()
    cfg = _yaml(tmp_path / "r.yaml", {"raster": inputs["features"], "components": 2, "output": out})
    assert main(["-q", "reduce", "--config", str(cfg)]) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 2


def test_hidden_aliases_still_work_and_stay_out_of_help(inputs, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["embed", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--aoi" in text and "--io-threads" in text and "--workers" in text  # --workers: dask workers
    assert not re.search(r"│\s+--(extent|extent-crs|read-threads)\s", text)  # hidden, yet accepted:
    former = ["--extent", "0,0,1,1", "--extent-crs", "EPSG:3857", "--read-threads", "3"]
    ctx = COMMANDS["embed"].make_context("embed", ["--model", "m", "-o", "f.tif", "r.tif", *former])
    assert (ctx.params["aoi"], ctx.params["aoi_crs"], ctx.params["io_threads"]) == ("0,0,1,1", "EPSG:3857", 3)
    assert main(["chips", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--output" in text and not re.search(r"│\s+--out\s", text)
    ds = tmp_path / "ds"
    args = ["-q", "chips", "-r", str(inputs["image"]), "-l", str(inputs["polys"]), "-a", "cls", "-s", "32"]
    assert main([*args, "--out", str(ds)]) == 0  # the former spelling
    assert (ds / "dataset.json").exists()
