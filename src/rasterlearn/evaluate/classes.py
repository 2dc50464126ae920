"""Truth classes of :func:`rasterlearn.evaluate.evaluate_map`: reading truth class names (inline text, a
mapping, a schema file) and matching truth codes to the map's classes by name."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rasterlearn.errors import ConfigError, InputError, InputNotFoundError
from rasterlearn.labels import ClassSchema

log = logging.getLogger("rasterlearn.evaluate")  # one logger for the package, as before the split

Unlabelled = Literal["auto", "background", "ignore"]
ClassMatch = Literal["auto", "name", "code"]
TruthClasses = ClassSchema | Mapping[int, str] | str | Path


def parse_class_names(text: str) -> dict[int, str]:
    """Parse inline class names ``"1=developed,2=agriculture"`` (``:`` also separates; ``;`` also
    delimits) into ``{1: "developed", 2: "agriculture"}``.

    Raises:
        InputError: an item is not ``CODE=NAME`` with an integer code, or a code repeats.
    """
    out: dict[int, str] = {}
    for item in re.split(r"[,;]", text):
        if not item.strip():
            continue
        m = re.fullmatch(r"\s*(-?\d+(?:\.0*)?)\s*[=:]\s*(.*?)\s*", item)
        if not m or not m.group(2):
            raise InputError(
                f"Class names must be 'CODE=NAME' items separated by commas, e.g. '1=developed,2=water'; "
                f"cannot read {item.strip()!r} in {text!r}"
            )
        code = int(float(m.group(1)))
        if code in out:
            raise InputError(f"Class code {code} is named twice in {text!r}")
        out[code] = m.group(2)
    if not out:
        raise InputError(f"No class names in {text!r}; expected e.g. '1=developed,2=water'")
    return out


def resolve_class_names(value: TruthClasses) -> dict[int, str]:
    """``{code: name}`` from a :class:`ClassSchema`, a mapping, a schema file (YAML/JSON/CSV, see
    :meth:`ClassSchema.load`) or inline ``"1=developed,2=agriculture"`` text."""
    if isinstance(value, ClassSchema):
        return dict(zip(value.codes, value.names, strict=True))
    if isinstance(value, Mapping):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError) as exc:
            raise InputError(f"Truth class names must map integer codes to names; got {value!r}") from exc
    text = str(value)
    if isinstance(value, Path) or Path(text).exists() or not re.search(r"[=:]", text):
        try:
            schema = ClassSchema.load(text)
        except InputNotFoundError as exc:
            raise InputNotFoundError(
                f"Truth class file not found: {text} (inline names look like '1=developed,2=water')"
            ) from exc
        except (ConfigError, InputError) as exc:
            raise ConfigError(f"Cannot read truth classes from {text}: {exc}") from exc
        return dict(zip(schema.codes, schema.names, strict=True))
    return parse_class_names(text)


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().casefold())


def match_class_names(
    truth_names: Mapping[int, str], schema: ClassSchema
) -> tuple[dict[int, int], dict[int, str]]:
    """Match truth codes to the map's classes by name.

    Names are compared case-insensitively, with runs of spaces, underscores and hyphens treated alike
    (``"Dense_Forest"`` matches ``"dense forest"``); the schema's ``source_values`` (original label texts)
    count as names too. Several truth codes may name the same map class (they are merged).

    Returns:
        ``({truth code: map code}, {truth code: name} of the truth classes that match no map class)``.
    """
    lookup = {_norm_name(n): c for c, n in zip(schema.codes, schema.names, strict=True)}
    for text, code in schema.source_values.items():
        lookup.setdefault(_norm_name(text), code)
    matched: dict[int, int] = {}
    unmatched: dict[int, str] = {}
    for code, name in sorted(truth_names.items()):
        key = _norm_name(name)
        if key in lookup:
            matched[code] = lookup[key]
        else:
            unmatched[code] = name
    return matched, unmatched


@dataclass
class NameMatching:
    """How truth codes meet the map's classes: the inputs of :meth:`remap`, which decides between comparing
    codes and matching names, and records the decision in ``record`` (the output's ``evaluation``)."""

    map_path: Path
    truth: Path
    schema: ClassSchema
    map_named: bool
    class_match: ClassMatch
    explicit_names: dict[int, str] | None
    ignore_set: list[float]
    record: dict[str, Any]

    def remap(self, found: Mapping[int, str] | None, source: str) -> dict[int, int] | None:
        """{truth code: map code} when truth classes are matched by name, else None (codes compared).

        ``found`` are the truth's own class names (a truth raster's), named in messages by ``source``.
        """
        explicit_names, class_match, truth = self.explicit_names, self.class_match, self.truth
        map_path, schema, record = self.map_path, self.schema, self.record
        names = explicit_names if explicit_names is not None else found
        src = "argument" if explicit_names is not None else source
        strict = explicit_names is not None or class_match == "name"
        if class_match == "code":
            return None
        if not names:
            if class_match == "name":
                raise InputError(
                    f"{truth} names no classes, so its codes cannot be matched to the map's classes by name; "
                    f"name them (truth_classes / --truth-names '1=developed,2=water' / --truth-classes FILE)"
                )
            return None
        if not self.map_named:
            if strict:
                raise InputError(
                    f"{map_path} names no classes, so truth classes cannot be matched by name; give the map's "
                    f"classes (schema / --schema FILE)"
                )
            log.info("%s names no classes; comparing the truth's codes with the map's", map_path)
            return None
        names = {c: nm for c, nm in names.items() if float(c) not in self.ignore_set}
        matched, unmatched = match_class_names(names, schema)
        if not matched and not strict:
            msg = (
                f"the truth's class names ({', '.join(sorted(set(names.values())))}) share none with the map's "
                f"({', '.join(schema.names)}); codes are compared"
            )
            log.warning("Evaluating against %s: %s", truth, msg)
            record["notes"].append(msg)
            return None
        if not strict and all(c == m for c, m in matched.items()):
            # the truth's names agree with the map's codes: comparing codes is the same, and it keeps
            # unnamed or unmatched truth codes meeting map classes of that code as before
            log.info("The class names of %s agree with the map's codes; codes are compared", truth)
            if unmatched:
                msg = (
                    f"truth classes {', '.join(f'{c}={nm!r}' for c, nm in unmatched.items())} name no class of "
                    f"the map; codes are compared"
                )
                log.warning("Evaluating against %s: %s", truth, msg)
                record["notes"].append(msg)
            return None
        if unmatched:
            listed = ", ".join(f"{c}={nm!r}" for c, nm in unmatched.items())
            raise InputError(
                f"Truth class(es) {listed} ({'given' if src == 'argument' else 'named by ' + str(truth)}) "
                f"match no class of the map {map_path.name} ({', '.join(schema.names)}; names compared "
                f"case-insensitively). Correct the names (truth_classes / --truth-names / --truth-classes), "
                f"skip those codes (ignore_values / --ignore {','.join(map(str, unmatched))}), or compare "
                f"codes (class_match='code' / --class-match code)."
            )
        record["class_match"] = "name"
        record["truth_class_names"] = src
        record["truth_classes"] = {
            str(c): {"name": names[c], "map_code": m, "map_name": schema.name_of(m)}
            for c, m in matched.items()
        }
        log.info(
            "Truth classes matched to the map's by name (%s): %s",
            "given" if src == "argument" else f"names from {truth.name}",
            ", ".join(f"{c} {names[c]!r} -> {m}" for c, m in matched.items()),
        )
        missing = [nm for c, nm in zip(schema.codes, schema.names, strict=True) if c not in matched.values()]
        if missing:
            log.info("Map classes without a truth class: %s", ", ".join(missing))
        return matched
