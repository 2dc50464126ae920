"""Data safety: an output never destroys an input, one run per output, clear errors on a full disk."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from rasterlearn.cli import main
from rasterlearn.errors import OutputError
from rasterlearn.io.paths import check_outputs, lock_path, output_lock
from tests.conftest import write_tif


def _sha(path: Path) -> str:
    if path.is_dir():
        return "".join(_sha(p) for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A 3-band image, a class map, labels, and stand-ins for a model package and a chip dataset."""
    rng = np.random.default_rng(0)
    img = write_tif(tmp_path / "img.tif", (rng.random((3, 32, 32)) * 1000).astype("uint16"))
    cmap = write_tif(tmp_path / "map.tif", rng.integers(0, 3, (32, 32)).astype("uint8"))
    gdf = gpd.GeoDataFrame(
        {"cls": ["a", "b"]},
        geometry=[box(500_000, 3_999_700, 500_150, 3_999_850), box(500_160, 3_999_700, 500_300, 3_999_850)],
        crs="EPSG:32633",
    )
    labels = tmp_path / "labels.gpkg"
    gdf.to_file(labels)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "model.json").write_text("{}")
    (pkg / "model.safetensors").write_bytes(b"weights")
    chips = tmp_path / "chips"
    chips.mkdir()
    (chips / "dataset.json").write_text("{}")
    (chips / "manifest.csv").write_text("chip_id,split\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"scenes:\n  - image: {img}\n    labels: {labels}\n    attribute: cls\nout: {tmp_path / 'run'}\n"
    )
    return {"img": img, "map": cmap, "labels": labels, "pkg": pkg, "chips": chips, "cfg": cfg}


# (command line with {placeholders}, the inputs an output may not be)
COMMANDS = {
    "predict": ("predict {pkg} {img} -o {out}", ["img", "pkg"]),
    "predict-probabilities": ("predict {pkg} {img} -o {tmp}/m.tif --probabilities {out}", ["img"]),
    "predict-vectorize": ("predict {pkg} {img} -o {tmp}/m.tif --vectorize {out}", ["img", "pkg"]),
    "embed": ("embed {img} --model resnet18 --no-pretrained -o {out}", ["img"]),
    "reduce": ("reduce {img} -o {out}", ["img"]),
    "reduce-model-out": ("reduce {img} -o {tmp}/r.tif --model-out {out}", ["img"]),
    "cluster": ("cluster {img} --clusters 3 -o {out}", ["img"]),
    "similarity": ("similarity {img} -r {labels} -o {out}", ["img", "labels"]),
    "classify": ("classify {img} -l {labels} -a cls -o {out}", ["img", "labels"]),
    "evaluate": ("evaluate {map} --truth {labels} --attribute cls -o {out}", ["map", "labels"]),
    "vectorize": ("vectorize {map} -o {out}", ["map"]),
    "chips": ("chips -r {img} -l {labels} -a cls --size 16 -o {out}", ["img", "labels"]),
    "analyze": ("analyze {chips} -o {out}", ["chips"]),
    "train": ("train {chips} -o {out}", ["chips"]),
    "evaluate-model": ("evaluate-model {pkg} {chips} -o {out}", ["pkg", "chips"]),
    "run": ("run {cfg} -o {out}", ["img", "labels", "cfg"]),
    "demo": ("demo -r {img} -l {labels} -a cls -o {out}", ["img", "labels"]),
}
CASES = [(cmd, inp) for cmd, (_, ins) in COMMANDS.items() for inp in ins]


@pytest.mark.parametrize(("command", "target"), CASES, ids=[f"{c}:{i}" for c, i in CASES])
def test_every_command_refuses_an_output_that_is_an_input(capsys, inputs, tmp_path, command, target):
    """Property: any command with ``-o`` equal to any of its inputs exits 2, naming both, inputs unchanged."""
    before = {k: _sha(p) for k, p in inputs.items()}
    out = inputs[target]
    line = COMMANDS[command][0].format(out=out, tmp=tmp_path, **inputs)
    overwrite = command.split("-")[0] in ("predict", "vectorize", "chips", "train")
    code = main([*line.split(), "--overwrite"] if overwrite else line.split())
    err = capsys.readouterr().err
    assert code == 2, err
    assert "would destroy the input" in err and str(out) in err, err
    assert {k: _sha(p) for k, p in inputs.items()} == before
    assert not list(tmp_path.glob(".*.lock")), "a refused run leaves no lock behind"


def test_symlink_hard_link_and_sidecar_of_an_input_are_refused(tmp_path):
    img = write_tif(tmp_path / "img.tif", np.zeros((4, 4), "uint8"))
    (tmp_path / "link.tif").symlink_to(img)
    os.link(img, tmp_path / "hard.tif")
    for out, how in [
        (tmp_path / "link.tif", "symbolic link"),
        (tmp_path / "hard.tif", "hard link"),
        (tmp_path / "img.tif.aux.xml", "side file"),
        (tmp_path / "img.qml", "side file"),
        (tmp_path / "img.tif.model", "side file"),
    ]:
        with pytest.raises(OutputError, match=how):
            check_outputs([img], [out])
    check_outputs([img], [tmp_path / "other.tif", None])  # unrelated outputs pass


def test_cluster_onto_its_input_exits_2_and_leaves_no_side_files(capsys, inputs):
    """Contract: ``cluster X.tif --method kmeans --clusters 3 -o X.tif`` -> exit 2, X.tif unchanged."""
    img = inputs["img"]
    before = _sha(img)
    assert main(["cluster", str(img), "--method", "kmeans", "--clusters", "3", "-o", str(img)]) == 2
    assert _sha(img) == before
    assert not img.with_suffix(".model").exists() and not img.with_suffix(".qml").exists()


def test_a_second_run_on_a_locked_output_refuses_naming_the_holder(tmp_path):
    out = tmp_path / "out.tif"
    lock = lock_path(out)
    lock.write_text(
        json.dumps({"pid": 1, "host": socket.gethostname(), "command": "rasterlearn x", "started": "t"})
    )
    with pytest.raises(OutputError, match=r"pid 1 on .*'rasterlearn x'"), output_lock(out):
        pass
    assert lock.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out.tif"
    lock = lock_path(out)
    dead = 2**22 + 12345  # above the default pid_max: never a live process
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "command": "c", "started": "t"}))
    with output_lock(out, command="mine"):
        assert json.loads(lock.read_text())["command"] == "mine"
    assert not lock.exists()
    assert "no longer running" in caplog.text


def test_disk_full_while_writing_is_one_line_and_cleans_up(capsys, inputs, tmp_path, monkeypatch):
    """ENOSPC in the block writer: one line naming the device and output; no partial files or OUT.model/."""
    import rasterlearn.io.writer as writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_block", full)
    out = tmp_path / "reduced.tif"
    code = main(["reduce", str(inputs["img"]), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "no space left on" in err and str(out) in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "reduced.model").exists()
    assert not [p.name for p in tmp_path.glob(".reduced*")]


def test_disk_full_in_an_atomic_write_is_an_output_error(tmp_path, monkeypatch):
    from rasterlearn._util import atomic_write_text

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"no space left on .* while writing .*x\.json"):
        atomic_write_text(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_cross_filesystem_move_goes_through_a_temporary_name(tmp_path, monkeypatch):
    from rasterlearn import _util

    src = tmp_path / "a" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(b"data")
    dst = tmp_path / "f.bin"
    real_replace = os.replace
    calls = []

    def replace(a, b):
        calls.append((Path(a).name, Path(b).name))
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)

    monkeypatch.setattr(_util.os, "replace", replace)
    _util.move_file(src, dst)
    assert dst.read_bytes() == b"data" and not src.exists()
    assert calls[-1] == (".f.bin.tmp", "f.bin")


@pytest.mark.parametrize("command", ["cluster", "classify", "chips", "embed"])
def test_disk_full_in_every_writing_stage_is_one_line(capsys, inputs, tmp_path, monkeypatch, command):
    import rasterlearn.chips.store as chips_mod  # chip files and tables are written there
    import rasterlearn.io.writer as writer
    from rasterlearn import _util

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_block", full)
    monkeypatch.setattr(chips_mod, "atomic_write", lambda path, write, **kw: _util.atomic_write(path, full))
    out = tmp_path / "o"
    line = {
        "cluster": f"cluster {inputs['img']} --clusters 2 -o {out}.tif",
        "classify": f"classify {inputs['img']} -l {inputs['labels']} -a cls --cv none -o {out}.tif",
        "chips": f"chips -r {inputs['img']} -l {inputs['labels']} -a cls --size 16 -o {out}",
        "embed": f"embed {inputs['img']} --model resnet18 --no-pretrained --size 32 -o {out}.tif",
    }[command]
    code = main(line.split())
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "no space left on" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.model").exists()
    partial = [p.name for p in tmp_path.rglob(".*") if ".tmp" in p.name or ".partial" in p.name]
    assert partial == [], partial  # nothing committed yet: no hidden partial or temporary file is left
    assert not list(tmp_path.rglob(".*.lock"))


def test_a_second_cli_run_on_a_locked_output_exits_2(capsys, inputs, tmp_path):
    out = tmp_path / "r.tif"
    holder = {
        "pid": os.getppid(),
        "host": socket.gethostname(),
        "command": "rasterlearn reduce A",
        "started": "t",
    }
    lock_path(out).write_text(json.dumps(holder))
    assert main(["reduce", str(inputs["img"]), "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"pid {os.getppid()}" in err and "rasterlearn reduce A" in err
    assert not out.exists() and lock_path(out).exists()
    assert not (tmp_path / "r.model").exists()  # the model folder is written only under the lock


def test_no_side_file_appears_beside_an_input(capsys, tmp_path):
    """Inputs in one folder, outputs in another: after every stage the input folder is unchanged."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    img = write_tif(src / "img.tif", (rng.random((3, 32, 32)) * 1000).astype("uint16"))
    cmap = write_tif(src / "map.tif", rng.integers(1, 3, (32, 32)).astype("uint8"))
    truth = write_tif(src / "truth.tif", rng.integers(1, 3, (32, 32)).astype("uint8"))
    gpd.GeoDataFrame(
        {"cls": ["a", "b"]},
        geometry=[box(500_000, 3_999_700, 500_150, 3_999_850), box(500_160, 3_999_700, 500_300, 3_999_850)],
        crs="EPSG:32633",
    ).to_file(src / "labels.gpkg")
    labels = src / "labels.gpkg"
    before = sorted(p.name for p in src.iterdir())
    out = tmp_path / "out"
    out.mkdir()
    for line in [
        f"info {img} --stats",
        f"reduce {img} -o {out}/r.tif",
        f"cluster {img} --clusters 2 -o {out}/c.tif",
        f"similarity {img} -r {labels} -o {out}/s.tif",
        f"classify {img} -l {labels} -a cls --cv none -o {out}/k.tif",
        f"vectorize {cmap} -o {out}/v.gpkg",
        f"evaluate {cmap} --truth {truth} -o {out}/e.json",
        f"chips -r {img} -l {labels} -a cls --size 16 -o {out}/chips",
    ]:
        assert main(line.split()) == 0, (line, capsys.readouterr().err)
    assert sorted(p.name for p in src.iterdir()) == before


def test_disk_full_during_predict_keeps_nothing_half_written(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import rasterlearn.io.writer as writer
    from rasterlearn.predict import predict_raster

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_block", full)
    img = write_tif(tmp_path / "img.tif", np.ones((2, 48, 48), "uint16"))
    meta = two_band_meta()
    out = tmp_path / "map.tif"
    with pytest.raises(OutputError, match="no space left on"):
        predict_raster(torch.nn.Conv2d(2, 3, 1), meta, img, out, probabilities=tmp_path / "p.tif", threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]


def two_band_meta():
    """Metadata of a 2-band, 3-output model on 32 px chips with unit normalization (uint16 test rasters)."""
    from rasterlearn.labels import ClassSchema
    from rasterlearn.models import ModelMetadata
    from rasterlearn.normalize import Normalization

    return ModelMetadata(
        arch="x",
        encoder="x",
        in_channels=2,
        num_classes=3,
        bands=["band_1", "band_2"],
        normalization=Normalization("zscore", (1.0, 1.0), (1.0, 1.0)).to_dict(),
        schema=ClassSchema.infer([1, 2]).to_dict(),
        chip_size=32,
    )
