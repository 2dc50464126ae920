"""The engine shared by every streaming stage.

So far: :mod:`rasterlearn.engine.events`, the one event stream (typed job events, progress callbacks,
the cancellation token) that the CLI renders as progress bars or ``--progress json`` lines.
"""

from rasterlearn.engine.events import CancelToken, Monitor, report_total

__all__ = ["CancelToken", "Monitor", "report_total"]
