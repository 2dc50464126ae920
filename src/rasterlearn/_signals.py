"""Prompt, resumable stops: SIGTERM handled like Ctrl-C (SIGINT) while a long job runs.

Python turns SIGINT into :class:`KeyboardInterrupt`, so a streaming job unwinds through its ``finally``
blocks (committing its resume state). SIGTERM (``kill``, a scheduler's stop) would otherwise end the
process at once, leaving the job's partial output unflushed; :func:`interrupt_on_sigterm` raises
:class:`KeyboardInterrupt` for it too. Only the main thread can install handlers; elsewhere it is a no-op.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["interrupt_on_sigterm"]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` in the main thread (restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Any = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
