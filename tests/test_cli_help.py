"""Every command's --help: no help text swallowed as rich markup, no blank defaults, no stray spaces."""

from __future__ import annotations

import re

import pytest
import typer
from rich.text import Text

from rasterlearn.cli import app, main

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _texts(name: str) -> list[tuple[str, str]]:
    cmd = COMMANDS[name]
    return [("(command)", cmd.help or "")] + [(p.name, getattr(p, "help", None) or "") for p in cmd.params]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_text_survives_rich_markup(name):
    # '[default: 20]' in a help string is a rich markup tag: it vanished from 'train --help'
    lost = [(p, h) for p, h in _texts(name) if Text.from_markup(h).plain != h]
    assert not lost, f"{name}: rich markup swallows part of {lost}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_output_has_no_blank_defaults_or_stray_spaces(capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "250")
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"rasterlearn {name}" in text
    for pattern in (r"\[default: *\]", r"\(default: *\)", r" [,;:)](\s|$)", r" \.(\s|$)", r"\[\]"):
        found = re.search(pattern, text)
        assert found is None, (
            f"{name} --help: {pattern!r} at ...{text[max(0, found.start() - 60) : found.end()]!r}"
        )


def test_train_help_shows_its_defaults():
    from rasterlearn.train import TrainConfig

    helps = dict(_texts("train"))
    config = TrainConfig()
    assert "(default: 20)" in helps["epochs"] and config.epochs == 20
    assert "(default: unet)" in helps["arch"] and config.arch == "unet"
    assert "(default: 42)" in helps["seed"] and config.seed == 42
