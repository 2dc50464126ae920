"""One self-contained HTML page per run (``OUT/report.html``), every figure also saved under ``OUT/report/``.

Sections: data summary (scenes, classes, chip counts per split, class balance chart), training curves,
validation / test / map metrics with confusion matrices, sample chips (input / truth / prediction), a
quick-look of each predicted map with its legend, feature maps (PCA, clusters, similarity), run parameters
and library versions, and the list of outputs with how to open them in QGIS.

The page is built from the files the stages wrote (``dataset.json``, ``manifest.csv``, ``history.csv``,
``metrics.json``, the maps), so it can be regenerated at any time without re-running anything.
"""

from rasterlearn.run_report.figures import plot_class_balance, plot_class_map
from rasterlearn.run_report.inputs import ReportInputs
from rasterlearn.run_report.page import write_run_report

__all__ = ["ReportInputs", "plot_class_balance", "plot_class_map", "write_run_report"]
