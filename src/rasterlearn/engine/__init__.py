"""The engine shared by every streaming stage: plan → read → compute → accumulate → write.

* :mod:`rasterlearn.engine.events` — the one event stream (typed job events, progress callbacks, the
  cancellation token) that the CLI renders as progress bars or ``--progress json`` lines and the QGIS
  plugin as its progress bar and Cancel button;
* :mod:`rasterlearn.engine.executor` — where block kernels run: in-process with read-ahead threads
  (:class:`~rasterlearn.engine.executor.LocalExecutor`) or on dask workers
  (:class:`~rasterlearn.engine.executor.DaskExecutor`), results in submission order;
* :mod:`rasterlearn.engine.accumulate` — the one Σw·x / Σw accumulator of overlapping tiles (predict's
  blended scores, embed's merged features);
* :mod:`rasterlearn.engine.readahead` — the reader pool: a dataset handle per reader thread and ordered,
  bounded read-ahead of the next blocks;
* :mod:`rasterlearn.engine.journal` — the one fingerprint and skip / resume / restart decision of every
  resumable job (block writer, pipeline stages, training), and :mod:`rasterlearn.engine.reduction` — the
  record of jobs that fold blocks into a result instead of writing raster blocks (evaluate, vectorize).

The block plan is :mod:`rasterlearn.grid` (tiles, windows, stripes), the reader and its validity policy
:mod:`rasterlearn.io.raster`, the one writer :class:`rasterlearn.io.writer.BlockWriter` (see
``docs/design.md``).
"""

from rasterlearn.engine.events import CancelToken, Monitor, report_total

__all__ = ["CancelToken", "Monitor", "report_total"]
