"""The ``rasterlearn`` command line: a thin typer layer over the library.

Each stage registers its commands from its own module (``cli/<stage>.py``) on the shared :data:`app`.
Library errors (:class:`rasterlearn.errors.RasterlearnError`) are printed without a traceback and exit
with code 2; ``-v`` shows the traceback.
"""

from __future__ import annotations

from rasterlearn.cli import assess as _assess  # noqa: F401  (registers sample, assess)
from rasterlearn.cli import change as _change  # noqa: F401  (registers change)
from rasterlearn.cli import chips as _chips  # noqa: F401  (registers chips, analyze)
from rasterlearn.cli import evaluate as _evaluate  # noqa: F401  (registers evaluate)
from rasterlearn.cli import export as _export  # noqa: F401  (registers export, qgis-plugin)
from rasterlearn.cli import features as _features  # noqa: F401  (registers embed, reduce, cluster, similarity, classify)
from rasterlearn.cli import info as _info  # noqa: F401  (registers commands)
from rasterlearn.cli import pipeline as _pipeline  # noqa: F401  (registers demo, init, run)
from rasterlearn.cli import predict as _predict  # noqa: F401  (registers predict, vectorize)
from rasterlearn.cli import train as _train  # noqa: F401  (registers train, evaluate-model, models)
from rasterlearn.cli._app import app, console, main

__all__ = ["app", "console", "main"]
