"""Training chips from rasters and labels: planning, filters, leakage-safe splits, manifest, statistics.

The stage function is :func:`run_chips` over :class:`rasterlearn.options.ChipsOptions` (the options of
``rasterlearn chips`` and its ``--config`` YAML); :func:`make_chips` is its keyword form over :class:`Scene`
objects, :class:`ChipJob` the job in explicit phases.

A chip dataset is a folder (format ``rasterlearn-chips/1``)::

    DIR/images/<chip_id>.tif   image chip: selected bands, source dtype and nodata, window georeference
    DIR/masks/<chip_id>.tif    class codes (uint8, uint16 when codes exceed 255), nodata = ignore code
    DIR/manifest.csv           one row per kept chip (paths, scene, split, window, bounds, pixel counts)
    DIR/candidates.csv         every planned window with its statistics and drop reason (for ``analyze``)
    DIR/dataset.json           parameters and their hash, schema, bands, trn statistics, CRS, splits

The job runs in phases that never hold a scene in memory: *scan* (read each planned window, rasterize
its labels, count pixels per class, apply the filters and write the chips that pass them; statistics
cached per scene in ``DIR/.scan/``), *split* (decided on the kept chips' footprints and pixel counts,
before any augmentation; chips it drops are removed again) and *write* (completes chips an interrupted
run left missing). Every chip file is written under a temporary name, then renamed; chip files do not
depend on the split, which lives in the manifest. Re-running with the same parameters skips finished chips; changed parameters go to
a new folder ``DIR-<hash>`` (or replace ``DIR`` with ``overwrite=True``), never mixing two parameter sets.

Splits: ``blocks`` (default) cuts the map into square blocks larger than a chip (anchored at the first
scene's top-left corner, in map coordinates, so overlapping scenes share blocks), assigns whole blocks to trn/val/tst (seeded, balancing kept
chips), and drops chips whose footprint touches blocks of two different splits: trn and val chips never
overlap. ``random`` and ``stratified`` (by the rarest class present) split chips individually and are
logged and recorded as *leaky* when chips overlap (stride < size). ``scene`` takes each scene's split
from the scenes CSV.
"""

from rasterlearn.chips.finish import ChipResult
from rasterlearn.chips.finish import combine_stats as combine_stats
from rasterlearn.chips.job import ChipJob, make_chips
from rasterlearn.chips.options import DROP_REASONS as DROP_REASONS
from rasterlearn.chips.options import FORMAT, SPLITS, Compression, SplitMethod, parse_class_proportion
from rasterlearn.chips.options import ChipSettings as ChipSettings
from rasterlearn.chips.options import Progress as Progress
from rasterlearn.chips.run import PhaseStart, chip_job, option_scenes, run_chips
from rasterlearn.chips.scenes import Scene, read_scenes_csv
from rasterlearn.chips.scenes import normalize_split as normalize_split
from rasterlearn.chips.sources import load_label_areas, load_vector_labels
from rasterlearn.chips.split import apply_filters, block_split, random_split, stratified_split
from rasterlearn.chips.split import filter_failures as filter_failures
from rasterlearn.label_grid import LabelRaster

__all__ = [
    "FORMAT",
    "SPLITS",
    "ChipJob",
    "ChipResult",
    "Compression",
    "LabelRaster",
    "PhaseStart",
    "Scene",
    "SplitMethod",
    "apply_filters",
    "block_split",
    "chip_job",
    "load_label_areas",
    "load_vector_labels",
    "make_chips",
    "option_scenes",
    "parse_class_proportion",
    "random_split",
    "read_scenes_csv",
    "run_chips",
    "stratified_split",
]
