"""One name per concept across commands: the shared options of cli/_options.py keep one spelling everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from rasterlearn.cli import app, main
from rasterlearn.cli._options import parse_aoi, parse_bands

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]

# parameter name -> its one spelling (short flag included) in every command that has it
CANONICAL = {
    "output": ["--output", "-o"],
    "aoi": ["--aoi"],
    "aoi_crs": ["--aoi-crs"],
    "device": ["--device"],
    "io_threads": ["--io-threads"],
    "memory_mb": ["--memory-mb"],
    "cache_mb": ["--cache-mb"],
    "batch_size": ["--batch-size"],
    "workers": ["--workers"],
    "progress": ["--progress"],
    "config": ["--config"],
    "seed": ["--seed"],
    "nodata_policy": ["--nodata-policy"],
    "no_resume": ["--no-resume"],
    "image": ["--image"],
    "stac": ["--stac"],
    "assets": ["--assets"],
    "labels": ["--labels", "-l"],
    "overwrite": ["--overwrite"],
    "layer": ["--layer"],
}
# spellings that differ today and are kept (changing them would change the command line)
# the DataLoader's worker processes of train and compare are another concept: --loader-workers
LOADER_WORKERS = {("train", "workers"), ("compare", "workers")}
KEPT = {("chips", "bands"), ("evaluate", "attribute"), ("transitions", "attribute")}


def _options(name: str) -> list:
    return [p for p in COMMANDS[name].params if p.param_type_name == "option"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_concepts_have_one_spelling(name) -> None:
    for p in _options(name):
        if p.name in CANONICAL and (name, p.name) not in LOADER_WORKERS:
            assert p.opts == CANONICAL[p.name], f"{name} --{p.name}: {p.opts}"
        # the folder outputs of train, compare, demo, run and analyze: -o/--output too
        if p.name == "out" and (name, "out") not in KEPT:
            assert p.opts == ["--output", "-o"], f"{name}: {p.opts}"
        if p.name in ("bands", "attribute") and (name, p.name) not in KEPT:
            assert p.opts[0] == f"--{p.name}" and len(p.opts) <= 2, f"{name}: {p.opts}"
        assert p.show_default is True, f"{name} --{p.name} hides its default"


def test_every_command_writing_a_file_names_it_with_o() -> None:
    writers = {n for n in COMMANDS if any(p.name in ("output", "out") for p in _options(n))}
    assert {"predict", "chips", "embed", "train", "vectorize", "evaluate", "export"} <= writers
    for name in writers:
        short = {o for p in _options(name) if p.name in ("output", "out") for o in p.opts}
        assert "-o" in short, name


def test_overwrite_keeps_each_commands_no_flag() -> None:
    # --no-overwrite exists exactly where it did before the options were shared
    negatable = {n for n in COMMANDS for p in _options(n) if p.name == "overwrite" and p.secondary_opts}
    plain = {n for n in COMMANDS for p in _options(n) if p.name == "overwrite" and not p.secondary_opts}
    assert negatable == {"assess", "init", "predict", "sample", "transitions", "vectorize"}
    assert plain == {"change", "chips", "export", "qgis-plugin", "train"}


def test_dask_workers_and_dataloader_workers_are_told_apart() -> None:
    def workers_help(name: str) -> str:
        return next(p.help for p in _options(name) if p.name == "workers")

    for name in ("predict", "embed", "reduce", "cluster", "similarity", "classify", "evaluate"):
        assert "dask LocalCluster" in workers_help(name)
    for name in ("train", "compare"):
        loader = next(p for p in _options(name) if p.name == "workers")
        assert loader.opts == ["--loader-workers"] and loader.help.startswith("DataLoader worker processes")


FORMER = [
    ("train", ["--out", "M"], "out", "M"),
    ("train", ["--workers", "3"], "workers", 3),
    ("train", ["--scheduler", "step"], "scheduler", "step"),
    ("compare", ["--out", "C"], "out", "C"),
    ("compare", ["--workers", "2"], "workers", 2),
    ("demo", ["--out", "D"], "out", "D"),
    ("run", ["--out", "R"], "out", "R"),
    ("analyze", ["--out", "A"], "out", "A"),
    ("chips", ["--out", "C"], "output", "C"),
    ("embed", ["--extent", "0,0,1,1"], "aoi", "0,0,1,1"),
    ("embed", ["--extent-crs", "EPSG:3857"], "aoi_crs", "EPSG:3857"),
    ("embed", ["--read-threads", "3"], "io_threads", 3),
]


@pytest.mark.parametrize(
    ("name", "argv", "param", "value"), FORMER, ids=[f"{f[0]} {f[1][0]}" for f in FORMER]
)
def test_former_spellings_still_parse_and_stay_out_of_help(
    name, argv, param, value, capsys, monkeypatch
) -> None:
    cmd = COMMANDS[name]
    required = {
        "train": ["DATA", "-o", "M"],
        "compare": ["DATA", "--candidates", "rf:bands", "-o", "C"],
        "embed": ["--model", "resnet18", "-o", "F.tif", "R.tif"],
    }
    args = [
        a for a in required.get(name, ["X.yaml"] if name == "run" else ["DATA"] if name == "analyze" else [])
    ]
    if argv[0] == "--out":  # the former spelling replaces the new one
        args = [a for i, a in enumerate(args) if a != "-o" and (i == 0 or args[i - 1] != "-o")]
    ctx = cmd.make_context(name, args + argv)
    assert ctx.params[param] == (Path(value) if param in ("out", "output") else value)
    monkeypatch.setenv("COLUMNS", "200")
    assert main([name, "--help"]) == 0  # through main, like a user (a CliRunner would rebind the console)
    help_text = capsys.readouterr().out
    new = next(p.opts[0] for p in _options(name) if p.name == param)
    assert new in help_text, f"{name} --help lacks {new}"
    assert f"{argv[0]} " not in help_text, f"{name} --help shows the former spelling {argv[0]}"


def test_parse_aoi_bounds_or_a_vector_file() -> None:
    assert parse_aoi(None) is None
    assert parse_aoi("500000,4000000,500640,4000640.5") == (500000.0, 4000000.0, 500640.0, 4000640.5)
    assert parse_aoi("aoi.gpkg") == Path("aoi.gpkg")
    assert parse_aoi("a,b,c,d") == Path("a,b,c,d")  # four parts that are not numbers: a file name


def test_parse_bands_indexes_and_descriptions() -> None:
    assert parse_bands(None) is None and parse_bands("") is None
    assert parse_bands("4, 3,2") == [4, 3, 2]
    assert parse_bands("red,nir,,8") == ["red", "nir", 8]
    assert parse_bands("-1, 2") == [-1, 2]  # an index the reader refuses by name, not a band description


def test_parse_numbers_one_comma_list_parser() -> None:
    from rasterlearn.errors import InputError
    from rasterlearn.options import parse_numbers

    assert parse_numbers(None, "ignore", float) is None and parse_numbers("", "ignore", float) is None
    assert parse_numbers("0, 255,", "ignore", float) == [0.0, 255.0]
    assert parse_numbers("0,3", "exclude", int) == [0, 3]
    with pytest.raises(
        InputError, match=r"^exclude: '0,1\.5' is not a comma list of class codes; give e\.g\. 0,255$"
    ):
        parse_numbers("0,1.5", "exclude", int, "class codes")
