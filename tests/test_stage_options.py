"""``cli._config.stage_options``: a command's parsed parameters become its options model, the one value the
command hands to the library's ``run_<stage>`` function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rasterlearn.cli._config import config_option, stage_options
from rasterlearn.errors import ConfigError
from rasterlearn.options import EvaluateOptions, PredictOptions


def _capture(command: Any) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)

    @app.callback()
    def _root() -> None:  # a group, so the command is called by its name
        pass

    return app


def test_parameters_map_to_fields_by_cli_name_and_alias(tmp_path: Path) -> None:
    """``model`` comes from the ``model_dir`` parameter, ``schema`` (field ``schema_``) from ``schema``."""
    seen: dict[str, Any] = {}

    def evaluate(
        ctx: typer.Context,
        map_path: Annotated[Path, typer.Argument()],
        truth: Annotated[Path, typer.Argument()],
        schema: Annotated[Path | None, typer.Option()] = None,
        workers: Annotated[int | None, typer.Option()] = None,
        config: Annotated[Path | None, config_option(EvaluateOptions)] = None,
    ) -> None:
        seen["options"] = stage_options(ctx, EvaluateOptions)

    app = _capture(evaluate)
    res = CliRunner().invoke(app, ["evaluate", "m.tif", "t.gpkg", "--schema", "s.yaml", "--workers", "2"])
    assert res.exit_code == 0, res.output
    opts = seen["options"]
    assert isinstance(opts, EvaluateOptions)
    assert (opts.map, opts.truth, opts.schema_, opts.workers) == (
        Path("m.tif"),
        Path("t.gpkg"),
        Path("s.yaml"),
        2,
    )
    assert opts.output is None and opts.class_match == "auto"  # fields without a parameter keep defaults


def test_config_file_values_and_command_line_precedence(tmp_path: Path) -> None:
    """File values reach the model; a flag wins over the file; keys without a flag are kept as extras."""
    seen: dict[str, Any] = {}

    def predict(
        ctx: typer.Context,
        model_dir: Annotated[Path | None, typer.Argument()] = None,
        overlap: Annotated[float, typer.Option()] = 0.25,
        blend: Annotated[str, typer.Option()] = "hann",
        config: Annotated[Path | None, config_option(PredictOptions)] = None,
    ) -> None:
        seen["options"] = stage_options(ctx, PredictOptions)

    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"model": "runs/m", "overlap": 0.5, "blend": "none", "memory_mb": 900}))
    app = _capture(predict)
    res = CliRunner().invoke(app, ["predict", "--config", str(cfg), "--blend", "center-crop"])
    assert res.exit_code == 0, res.output
    opts = seen["options"]
    assert opts.model == Path("runs/m") and opts.overlap == 0.5
    assert opts.blend == "center-crop"  # the command line overrides the file
    assert opts.memory_mb == 900  # a file key with no parameter in this command


def test_a_value_the_model_refuses_is_one_config_error() -> None:
    seen: dict[str, Any] = {}

    def predict(ctx: typer.Context, blend: Annotated[str, typer.Option()] = "hann") -> None:
        try:
            stage_options(ctx, PredictOptions)
        except ConfigError as exc:
            seen["error"] = str(exc)

    app = _capture(predict)
    CliRunner().invoke(app, ["predict", "--blend", "gaussian"])
    assert seen["error"].startswith("rasterlearn predict: 'blend'")
    assert "gaussian" in seen["error"]
    with pytest.raises(KeyError):
        seen["options"]
