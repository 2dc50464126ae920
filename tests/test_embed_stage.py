"""The embed stage's API (:func:`rasterlearn.embed.run_embed`): one options model for the CLI, ``--config``,
the pipeline and Python, and the session fingerprint taken from that model."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from rasterlearn.embed import EmbedResult, embed, embed_arguments, run_embed
from rasterlearn.embed.request import STAGE_ONLY, EmbedRequest
from rasterlearn.embed.session import _session_parameters, session_hash
from rasterlearn.errors import ConfigError
from rasterlearn.io.raster import RasterReader
from rasterlearn.options import EmbedOptions

FAST = {"model": "resnet18", "no_pretrained": True, "size": 32, "layer": 1, "device": "cpu"}


@pytest.fixture
def image(make_raster) -> Path:
    return make_raster(np.random.default_rng(3).integers(1, 250, (3, 48, 64)).astype("uint8"), name="img.tif")


def _options(**values: Any) -> EmbedOptions:
    return EmbedOptions.model_validate(values)


def test_run_embed_writes_what_the_cli_and_the_kernel_write(image, tmp_path) -> None:
    from rasterlearn.cli import main

    opts = _options(
        raster=str(image), output=tmp_path / "api.tif", cache_dir=tmp_path / "c1", stride=16, **FAST
    )
    api = run_embed(opts)
    args = [
        "-q",
        "embed",
        str(image),
        "--model",
        "resnet18",
        "--no-pretrained",
        "--size",
        "32",
        "--layer",
        "1",
    ]
    args += ["--stride", "16", "--device", "cpu", "--cache-dir", str(tmp_path / "c2"), "--progress", "none"]
    assert main([*args, "-o", str(tmp_path / "cli.tif")]) == 0
    kernel = embed(
        image,
        "resnet18",
        output=tmp_path / "kernel.tif",
        pretrained=False,
        size=32,
        stride=16,
        layer=1,
        device="cpu",
        cache_dir=tmp_path / "c3",
    )
    data = api.path.read_bytes()
    assert data == (tmp_path / "cli.tif").read_bytes() == kernel.path.read_bytes()
    assert api.session_id == kernel.session_id  # one session for the same job, however it was called
    with RasterReader(api.path) as r:
        assert (r.count, r.grid.width, r.grid.height) == (api.dim, api.grid.width, api.grid.height)


def test_cli_options_and_config_file_hand_run_embed_one_model(image, tmp_path, monkeypatch) -> None:
    import rasterlearn.embed
    from rasterlearn.cli import main

    seen: list[EmbedOptions] = []

    def fake(options: EmbedOptions, *, progress: Any = None) -> Any:
        seen.append(options)
        grid = SimpleNamespace(width=1, height=1, res=(1.0, 1.0))
        return SimpleNamespace(path=options.output, grid=grid, dim=1, session=tmp_path)

    monkeypatch.setattr(rasterlearn.embed, "run_embed", fake)
    out = tmp_path / "f.tif"
    cli = [
        "--size",
        "64",
        "--stride",
        "32",
        "--bands",
        "3,1",
        "--aoi",
        "1,2,3,4",
        "--model-kwargs",
        '{"a": 1}',
    ]
    cli += ["--merge", "center", "--no-pretrained", "--seed", "4", "--io-threads", "2", "--min-valid", "0.25"]
    assert (
        main(["-q", "embed", str(image), "--model", "resnet18", "-o", str(out), *cli, "--progress", "none"])
        == 0
    )
    config = {
        "raster": str(image),
        "model": "resnet18",
        "output": str(out),
        "size": 64,
        "stride": 32,
        "bands": [3, 1],
        "aoi": [1, 2, 3, 4],
        "model_kwargs": {"a": 1},
        "merge": "center",
        "no_pretrained": True,
        "seed": 4,
        "io_threads": 2,
        "min_valid": 0.25,
    }
    (tmp_path / "embed.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "embed", "--config", str(tmp_path / "embed.yaml"), "--progress", "none"]) == 0
    a, b = seen
    assert a.model_dump() == b.model_dump()
    assert (a.bands, a.model_kwargs, a.min_valid, a.io_threads) == ("3,1", '{"a": 1}', 0.25, 2)
    kw = embed_arguments(a)
    assert kw["bands"] == [3, 1] and kw["extent"] == (1.0, 2.0, 3.0, 4.0) and kw["model_kwargs"] == {"a": 1}
    assert (kw["pretrained"], kw["workers"], kw["min_valid_fraction"], kw["resume"]) == (False, 2, 0.25, True)


def _kernel_call(options: EmbedOptions, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """``embed``'s every argument for ``options`` (its defaults for the rest), as ``run_embed`` calls it."""
    sig = inspect.signature(embed)
    call = {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    return {**call, **embed_arguments(options), "raster": options.raster, "provenance": provenance}


def _session(options: EmbedOptions, provenance: dict[str, Any] | None = None) -> str:
    """The session hash of ``options`` without running the job (fixed weights digest)."""
    req = EmbedRequest.from_call(_kernel_call(options, provenance))
    with RasterReader(req.raster, req.bands) as r:
        bands = r.band_indexes
    return session_hash(_session_parameters(req, bands, "0123456789abcdef"))


def _other_values(tmp_path: Path, make_raster: Any) -> dict[str, Any]:
    """A value other than the base's for every option."""
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights")
    other = make_raster(np.ones((3, 48, 64), "uint8"), name="other.tif")
    return {
        "raster": str(other),
        "model": "resnet34",
        "output": tmp_path / "other.tif",
        "size": 16,
        "stride": 16,
        "checkpoint": ckpt,
        "input_size": 64,
        "layer": 2,
        "bands": "2,1",
        "normalization": "model",
        "value_scale": 255.0,
        "merge": "first",
        "storage": "float16",
        "min_valid": 0.25,
        "aoi": "500000,3999600,500300,4000000",
        "aoi_crs": "EPSG:4326",
        "target_crs": "EPSG:3857",
        "resolution": 20.0,
        "resampling": "nearest",
        "device": "cuda",
        "batch_size": 2,
        "io_threads": 3,
        "pause": 0.5,
        "no_pretrained": False,
        "seed": 5,
        "model_kwargs": '{"drop_rate": 0.1}',
        "cache_dir": tmp_path / "elsewhere",
        "no_resume": True,
        "memory_mb": 32.0,
        "cache_mb": 8,
        "scheduler": "tcp://127.0.0.1:8786",
        "workers": 2,
        "stac": "item.json",
        "assets": "B04,B03,B02",
    }


def test_the_session_follows_every_option_but_the_neutral_ones(image, tmp_path, make_raster) -> None:
    base = {"raster": str(image), "output": tmp_path / "f.tif", **FAST}
    fp = _session(_options(**base))
    assert fp == _session(_options(**base)) and len(fp) == 16
    others = _other_values(tmp_path, make_raster)
    assert set(others) == set(EmbedOptions.model_fields), "give every option another value here"
    changed, kept = set(), set()
    for name, value in others.items():
        if name in STAGE_ONLY - {"scheduler", "workers"}:
            continue  # the STAC item is resolved by run_embed: its provenance is what the session holds
        (changed if _session(_options(**{**base, name: value})) != fp else kept).add(name)
    assert kept == set(EmbedOptions.neutral_fields())
    assert changed == set(EmbedOptions.model_fields) - EmbedOptions.neutral_fields() - {"stac", "assets"}
    item = {"stac_item": "item.json", "stac_item_id": "S2", "stac_assets": ["B04"], "stac_hrefs": {}}
    assert _session(_options(**base), item) != fp
    assert _session(_options(**base), {**item, "stac_assets": ["B03"]}) != _session(_options(**base), item)


def test_the_session_holds_what_the_options_resolve_to(image, tmp_path) -> None:
    base = {"raster": str(image), "output": tmp_path / "f.tif", **FAST}
    fp = _session(_options(**base))
    # the same job spelt otherwise: stride = size, bands by index, JSON spacing, a relative path
    same = {"stride": 32, "bands": "1,2,3", "model_kwargs": "{}"}
    assert _session(_options(**{**base, **same})) == fp
    assert _session(_options(**{**base, "model_kwargs": '{"a":1}'})) == _session(
        _options(**{**base, "model_kwargs": '{"a": 1}'})
    )
    ckpt, moved = tmp_path / "w.pth", tmp_path / "sub" / "copy.pth"
    ckpt.write_bytes(b"weights")
    moved.parent.mkdir()
    moved.write_bytes(b"weights")
    assert _session(_options(**base, checkpoint=ckpt)) == _session(_options(**base, checkpoint=moved))


def test_run_embed_refusals(image, tmp_path) -> None:
    out = tmp_path / "f.tif"
    with pytest.raises(ConfigError, match="needs a model"):
        run_embed(_options(raster=str(image), output=out))
    with pytest.raises(ConfigError, match="Give a RASTER"):
        run_embed(_options(model="resnet18", output=out))
    with pytest.raises(ConfigError, match="not both"):
        run_embed(_options(raster=str(image), stac="item.json", model="resnet18", output=out))
    with pytest.raises(ConfigError, match="--assets needs --stac"):
        run_embed(_options(raster=str(image), assets="B04", model="resnet18", output=out))
    with pytest.raises(ConfigError, match="JSON object"):
        run_embed(_options(raster=str(image), model="resnet18", output=out, model_kwargs="[1]"))
    assert not out.exists()


def test_run_embed_announces_the_tiles_and_reports_every_one(image, tmp_path) -> None:
    from rasterlearn.engine.events import Monitor

    events: list[Any] = []
    monitor = Monitor("embed", events.append)
    phase = monitor.phase("embed", None, "tiles")
    aoi = "500000,3999680,500320,4000000"  # the top-left 32 x 32 px: 1 tile of 4 x 2
    res = run_embed(_options(raster=str(image), output=tmp_path / "f.tif", aoi=aoi, **FAST), progress=phase)
    assert isinstance(res, EmbedResult) and res.tiles == 1
    totals = [e.total for e in events if getattr(e, "total", None) is not None]
    assert totals[0] == 4 and totals[-1] == 1  # the estimate over the raster, then the AOI's true total
    assert phase.done == phase.total == 1
    params = json.loads((res.session / "parameters.json").read_text())
    assert params["aoi"] == [500000, 3999680, 500320, 4000000]


def test_the_pipeline_features_stage_runs_the_embed_stage(image, tmp_path) -> None:
    from rasterlearn.pipeline import run_pipeline

    features = {"enabled": True, "model": "resnet18", "pretrained": False, "size": 32, "layer": 1}
    features |= {"bands": [3, 1], "model_kwargs": {"drop_rate": 0.0}, "device": "cpu"}
    features |= {"pca_components": 0, "clusters": 0}
    cfg = {"name": "f", "out": str(tmp_path / "run"), "scenes": [{"image": str(image), "id": "s"}]}
    cfg |= {"features": features, "report": {"enabled": False}}
    res = run_pipeline(cfg, stages=["features"])
    feat = Path(res.stages["features"].outputs["s"]["features"])
    opts = {"raster": str(image), "output": tmp_path / "api.tif", "cache_dir": tmp_path / "c", **FAST}
    api = run_embed(_options(**opts, bands="3,1", model_kwargs='{"drop_rate": 0.0}'))
    assert feat.read_bytes() == api.path.read_bytes()
    assert res.stages["features"].summary["s_weights_sha256"] == api.parameters["weights_sha256"]
    (session,) = (tmp_path / "run" / "features" / "embed_sessions").glob("*/parameters.json")
    assert session.parent.name == api.session_id  # the same job: the same session
