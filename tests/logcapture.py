"""A fixture that lets ``caplog`` see rasterlearn's log records even after a CLI test ran.

The CLI's ``setup_logging`` gives the ``rasterlearn`` logger its own handler, stops propagation and may
set it to ERROR (``-q``); later tests that read ``caplog`` would see nothing. Import the fixture
(``from tests.logcapture import rasterlearn_logs  # noqa: F401``) where a test asserts on log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def rasterlearn_logs() -> Iterator[None]:
    lg = logging.getLogger("rasterlearn")
    propagate, level = lg.propagate, lg.level
    lg.propagate = True
    lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        lg.propagate = propagate
        lg.setLevel(level)
