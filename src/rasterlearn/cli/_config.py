"""``--config FILE.yaml`` on every stage command: a YAML file of the command's options as its defaults.

One helper for every command: :func:`config_option` builds the ``--config`` option for a stage's options
model (:mod:`rasterlearn.options`). Its eager callback reads the file (``yaml.safe_load``), validates it
with the model (an unknown key or a wrong type is one line naming the file, the key and the valid keys or
the expected type, exit 2; with ``--progress json`` a ``failed`` event) and puts the values into click's
``default_map`` of the command. Precedence is therefore: options given on the command line, then the file,
then the built-in defaults; positional arguments (``MODEL``, ``RASTER``, ``MAP``) may come from the file.

Keys of a model without a command-line option (``stats_sample`` of chips) are kept in the context and
returned by :func:`config_extras`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, TypeVar, cast

import typer

from rasterlearn.cli._app import state
from rasterlearn.errors import RasterlearnError
from rasterlearn.options import StageOptions, load_options

__all__ = ["config_extras", "config_option", "stage_options"]

_EXTRAS = "rasterlearn.config_extras"
M = TypeVar("M", bound=StageOptions)


def config_option(model: type[StageOptions]) -> Any:
    """The ``--config`` option of ``model.command`` (use as ``Annotated[Path | None, config_option(M)] = None``)."""

    def load(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
        if value is None or ctx.resilient_parsing:
            return value
        try:
            options = load_options(value, model)
        except RasterlearnError:
            if _progress_json_requested():  # --progress is parsed after --config: start its JSON job now
                from rasterlearn.cli._progress import _start_job

                _start_job(cast(Any, ctx), param, "json")
            raise
        apply_options(ctx, options)
        return value

    return typer.Option(
        "--config",
        metavar="FILE.yaml",
        is_eager=True,
        callback=load,
        help=f"YAML file of {model.command} options: keys are the option names in snake_case (--memory-mb: "
        "memory_mb), positional arguments included (see docs/config.md). Options given on the command line "
        "override the file; the file overrides the defaults shown here.",
    )


def apply_options(ctx: typer.Context, options: StageOptions) -> None:
    """Make the keys set in ``options`` the defaults of ``ctx``'s parameters (command line still wins)."""
    params = {p.name: p for p in ctx.command.params}
    given = options.model_dump(mode="json", by_alias=True, include=options.model_fields_set)
    defaults = dict(ctx.default_map or {})
    extras: dict[str, Any] = {}
    for key, value in given.items():
        param = params.get(options.cli_names.get(key, key))
        if param is None or param.name is None:
            extras[key] = value
        else:
            defaults[param.name] = _cli_value(param, value)
    ctx.default_map = defaults
    ctx.meta[_EXTRAS] = extras


def config_extras(ctx: typer.Context) -> dict[str, Any]:
    """Keys of the ``--config`` file that have no command-line option (empty without a file)."""
    return dict(ctx.meta.get(_EXTRAS, {}))


def stage_options(ctx: typer.Context, model: type[M]) -> M:
    """The command's parsed parameters (command line, then ``--config``, then defaults) as ``model``: the one
    value the command hands to the library's stage function (``run_predict(options)``...).

    Parameters are matched to fields by name (``model.cli_names`` for those named otherwise); keys of the
    ``--config`` file without a command-line option (:func:`config_extras`) are added. A value the model
    refuses is one :class:`~rasterlearn.errors.ConfigError` line naming the option.
    """
    from pydantic import ValidationError

    from rasterlearn.errors import ConfigError
    from rasterlearn.options import describe_validation_error

    params = ctx.params
    values: dict[str, Any] = config_extras(ctx)
    for name, field in model.model_fields.items():
        cli_name = model.cli_names.get(name) or (name if name in params else field.alias)
        if cli_name in params:
            values[field.alias or name] = params[cli_name]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"rasterlearn {model.command}: {describe_validation_error(exc, model)}") from exc


def _progress_json_requested() -> bool:
    """Whether this invocation's arguments (recorded by ``main``) ask for ``--progress json``."""
    args = [str(a) for a in state.get("argv") or []]
    pairs = itertools.pairwise(args)
    return "--progress=json" in args or any(a == "--progress" and b == "json" for a, b in pairs)


def _cli_value(param: Any, value: Any) -> Any:
    """A validated file value in the form the command line gives it (a list, or a comma list)."""
    if value is None:
        return None
    if getattr(param, "multiple", False) or param.nargs != 1:
        return value if isinstance(value, list) else [value]
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return value
