"""The event stream: monitor counts, throttling and cancellation; ``--progress json`` and SIGTERM in the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from rasterlearn.engine.events import CancelToken, Finished, Monitor, Phase, Progress, Started, report_total
from rasterlearn.errors import JobCancelledError
from rasterlearn.predict import predict_raster
from tests.test_predict import FCN, _meta, _package


def _collect() -> tuple[list, Monitor]:
    events: list = []
    return events, Monitor("job", events.append, min_interval=3600)


def test_first_phase_announces_the_job_and_counts_reach_the_total() -> None:
    events, mon = _collect()
    advance = mon.phase("scan", 10, "windows")
    for _ in range(10):
        advance(1)
    assert isinstance(events[0], Started) and events[0].total == 10 and events[0].unit == "windows"
    assert isinstance(events[1], Phase) and events[1].index == 0
    progress = [e for e in events if isinstance(e, Progress)]
    # throttled (interval of an hour): only the first call and the completion are emitted
    assert [p.done for p in progress] == [1, 10]
    assert progress[-1].fraction == 1.0 and progress[-1].phase == "scan"
    mon.phase("write", 3, "chips")
    assert [e.index for e in events if isinstance(e, Phase)] == [0, 1]
    assert sum(isinstance(e, Started) for e in events) == 1


def test_report_total_corrects_the_phase_total_and_ignores_plain_callbacks() -> None:
    events, mon = _collect()
    advance = mon.phase("predict", 1000, "px")
    report_total(advance, 250)
    assert advance.total == 250 and events[-1].total == 250
    report_total(lambda n: None, 5)  # a plain callback has no total: nothing happens
    report_total(None, 5)


def test_cancel_token_stops_at_the_next_progress_call() -> None:
    token = CancelToken()
    mon = Monitor("job", token=token)
    advance = mon.phase("blocks", 5)
    advance(1)
    token.cancel("SIGTERM received")
    with pytest.raises(JobCancelledError, match=r"SIGTERM received.*resum"):
        advance(1)
    assert advance.done == 2  # the finished block was counted before stopping


def test_events_serialize_with_schema_version() -> None:
    d = Finished(message="ok").to_dict()
    assert d["v"] == 1 and d["event"] == "finished" and d["message"] == "ok" and isinstance(d["time"], float)
    json.dumps(Progress(done=1, total=2, fraction=0.5, phase="x").to_dict())


def test_cancelled_predict_keeps_resumable_state_and_resumes_identically(make_raster, tmp_path) -> None:
    rng = np.random.default_rng(3)
    src = make_raster(rng.integers(0, 200, (2, 96, 80)).astype("uint8"), nodata=255, name="s.tif")
    meta = _meta(["a", "b"], 3, chip=32)
    kw = dict(overlap=0.5, window=32, batch_size=2, blocksize=16, threads=1, io_threads=1)
    net = FCN(2, 3)
    clean = tmp_path / "clean.tif"
    predict_raster(net, meta, src, clean, **kw)

    token = CancelToken()
    mon = Monitor("predict", token=token)
    advance = mon.phase("predict", None, "px")
    calls = {"n": 0}

    def progress(n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            token.cancel("test")
        advance(n)

    progress.set_total = advance.set_total  # type: ignore[attr-defined]
    out = tmp_path / "out.tif"
    with pytest.raises(JobCancelledError):
        predict_raster(net, meta, src, out, progress=progress, **kw)
    assert not out.exists(), "nothing under the final name after a cancel"
    assert (tmp_path / ".out.tif.progress.json").exists()
    assert advance.total == 96 * 80  # the library announced its true total
    res = predict_raster(net, meta, src, out, **kw)
    assert res.blocks_resumed > 0
    assert out.read_bytes() == clean.read_bytes()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from rasterlearn.cli import main; sys.exit(main())", *args]


def _events(stderr: str) -> list[dict]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]  # every line must be JSON


@pytest.mark.parametrize("aoi", [False, True], ids=["whole", "aoi"])
def test_cli_progress_json_counts_up_to_the_announced_total(make_raster, tmp_path, aoi) -> None:
    rng = np.random.default_rng(2)
    src = make_raster(rng.integers(0, 255, (3, 70, 50)).astype("uint8"), name="scene.tif", nodata=None)
    pkg = _package(tmp_path)
    out = tmp_path / "map.tif"
    args = ["predict", str(pkg), str(src), "-o", str(out), "--progress", "json", "--threads", "1"]
    if aoi:
        import rasterio

        with rasterio.open(src) as ds:
            b = ds.bounds
        args += ["--aoi", f"{b.left},{b.bottom},{b.left + (b.right - b.left) / 2},{b.top}"]
    r = subprocess.run(
        _cli(*args), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    ev = _events(r.stderr)
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "started" and kinds[1] == "phase" and kinds[-1] == "finished"
    assert all(e["v"] == 1 for e in ev)
    prog = [e for e in ev if e["event"] == "progress"]
    assert prog and prog[-1]["done"] == prog[-1]["total"] and prog[-1]["fraction"] == 1.0
    expected = 70 * 25 if aoi else 70 * 50
    assert prog[-1]["total"] == expected
    assert any(e["event"] == "log" and "Predicted" in e["message"] for e in ev)
    assert out.exists()


def test_cli_failure_in_json_mode_is_one_failed_event(tmp_path) -> None:
    r = subprocess.run(
        _cli("reduce", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif"), "--progress", "json"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    ev = _events(r.stderr)
    assert ev[-1]["event"] == "failed" and "missing.tif" in ev[-1]["message"] and ev[-1]["exit_code"] == 2
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_sigterm_cancels_between_blocks_and_the_rerun_resumes(make_raster, tmp_path) -> None:
    rng = np.random.default_rng(5)
    src = make_raster(rng.integers(0, 255, (3, 192, 128)).astype("uint8"), name="scene.tif")
    pkg = _package(tmp_path)
    common = [str(pkg), str(src), "--overlap", "0.5", "--batch-size", "1", "--blocksize", "32"]
    common += ["--threads", "1", "--progress", "json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "map.tif"
    proc = subprocess.Popen(
        _cli("predict", *common, "-o", str(out)), env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen: list[dict] = []
    for line in proc.stderr:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress" and 0 < seen[-1]["done"] < seen[-1]["total"]:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    seen += _events(rest)
    assert proc.returncode == 130, rest
    assert seen[-1]["event"] == "cancelled" and "resum" in seen[-1]["message"]
    assert not out.exists() and (tmp_path / ".map.tif.progress.json").exists()

    r = subprocess.run(_cli("predict", *common, "-o", str(out)), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ev = _events(r.stderr)
    assert any("Resuming" in e.get("message", "") for e in ev)
    clean = tmp_path / "clean.tif"
    r = subprocess.run(_cli("predict", *common, "-o", str(clean)), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == clean.read_bytes()


def test_every_long_command_takes_progress_json() -> None:
    from typer.main import get_command

    from rasterlearn.cli import app

    cli = get_command(app)
    long_commands = ["chips", "analyze", "train", "evaluate-model", "predict", "vectorize", "evaluate"]
    long_commands += ["embed", "reduce", "cluster", "similarity", "classify", "demo", "run", "compare"]
    for name in long_commands:
        opts = {o for p in cli.commands[name].params for o in p.opts}  # type: ignore[attr-defined]
        assert "--progress" in opts, name
