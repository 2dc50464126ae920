"""Every rasterlearn Processing algorithm as data, and the CLI argument list built from plain values.

Pure Python (no QGIS): :data:`ALGORITHMS` declares each algorithm's parameters (kind, CLI option, default)
and how its outputs are styled; :func:`build_args` turns plain parameter values (paths as text, numbers,
lists of band numbers, extents as tuples) into the ``rasterlearn`` argument list. The QGIS side
(``algorithms/base.py``) only converts QGIS parameters to these values and back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .params import INPUT_KINDS, OUTPUT_KINDS, AlgoSpec, P
from .specs_features import FEATURE_ALGORITHMS
from .specs_supervised import SUPERVISED_ALGORITHMS

__all__ = ["ALGORITHMS", "INPUT_KINDS", "OUTPUT_KINDS", "AlgoSpec", "P", "build_args", "spec_by_id"]

ALGORITHMS: tuple[AlgoSpec, ...] = FEATURE_ALGORITHMS + SUPERVISED_ALGORITHMS


def spec_by_id(algo_id: str) -> AlgoSpec:
    for spec in ALGORITHMS:
        if spec.id == algo_id:
            return spec
    raise KeyError(f"unknown rasterlearn algorithm {algo_id!r}")


def _text(p: P, value: Any) -> str | None:
    if (
        value is None
        or (isinstance(value, str) and value == "")
        or (isinstance(value, Sequence | tuple) and not isinstance(value, str) and len(value) == 0)
    ):
        return None
    if p.kind == "bands":
        return ",".join(str(int(b)) for b in value)
    if p.kind == "extent":
        return ",".join(repr(float(v)) for v in value)
    if p.kind == "float":
        return repr(float(value))
    if p.kind == "int":
        return str(int(value))
    return str(value)


def build_args(
    spec: AlgoSpec,
    values: Mapping[str, Any],
    *,
    device: str | None = None,
    progress_json: bool = True,
) -> list[str]:
    """The argument list after the executable for ``spec`` with plain ``values`` (missing = CLI default).

    Outputs that exist already get the command's overwrite flag (QGIS asked the user before), so a
    partial run (nothing under the final name) still resumes.
    """
    args: list[str] = list(spec.command)
    positional: list[str] = []
    for p in spec.params:
        if p.flag is None and p.kind != "bool" and p.kind in OUTPUT_KINDS:
            continue  # an output the plugin writes itself (info's JSON)
        value = values.get(p.name, p.default)
        if p.kind == "bool":
            if value and p.flag:
                args.append(p.flag)
            elif not value and p.invert:
                args.append(p.invert)
            continue
        text = _text(p, value)
        if text is None:
            continue
        if p.flag is None:
            positional.append(text)
            continue
        args += [p.flag, text]
        if (
            p.kind in OUTPUT_KINDS
            and p.overwrite_flag
            and os.path.exists(text)
            and p.overwrite_flag not in args
        ):
            args.append(p.overwrite_flag)
    if spec.device and device and device != "auto":
        dev = device
        if spec.device == "--accelerator":
            dev = "gpu" if device.startswith("cuda") else device
        args += [spec.device, dev]
    if spec.progress and progress_json:
        args += ["--progress", "json"]
    return args + positional
