"""The chips stage function: :func:`run_chips` takes :class:`~rasterlearn.options.ChipsOptions`, the one
signature of the Python API, the ``rasterlearn chips`` command, its ``--config`` YAML and the run YAML's
chips stage."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

from rasterlearn.chips.finish import ChipResult
from rasterlearn.chips.job import ChipJob
from rasterlearn.chips.options import Progress
from rasterlearn.chips.scenes import Scene, read_scenes_csv
from rasterlearn.engine.events import report_total
from rasterlearn.errors import ConfigError
from rasterlearn.labels import ClassSchema
from rasterlearn.options import ChipsOptions

__all__ = ["PhaseStart", "chip_job", "option_scenes", "run_chips"]

PhaseStart = Callable[[str, int, str], Progress | AbstractContextManager[Progress]]
"""Opens a progress phase ``(name, total, unit)`` and returns its ``progress(n)`` callback (e.g.
:meth:`rasterlearn.engine.events.Monitor.phase`), or a context manager giving it that is closed when the
phase ends (the CLI's progress bars)."""

SCAN_PHASE = ("scanning windows", "windows")
WRITE_PHASE = ("writing chips", "chips")


def run_chips(
    options: ChipsOptions,
    *,
    progress: Progress | None = None,
    phases: PhaseStart | None = None,
    scenes: Sequence[Scene] | None = None,
    schema: ClassSchema | None = None,
) -> ChipResult:
    """Cut the options' scenes and labels into a chip dataset in ``options.output`` (resumable).

    Example::

        from rasterlearn.chips import run_chips
        from rasterlearn.options import ChipsOptions

        res = run_chips(ChipsOptions(raster=["scene.tif"], labels=["roofs.gpkg"], attribute="class",
                                     output="chips", size=256, stride=128))
        print(res.out, res.splits)

    Args:
        options: what ``rasterlearn chips`` takes (its ``--config`` keys): the inputs (``raster`` with
            ``labels`` or ``label_raster``, ``image`` per date of one scene, or a ``scenes`` CSV), the
            dataset folder ``output`` and the chips' parameters (see :func:`make_chips`).
        progress: called with the number of windows scanned, then of chips written; its total (windows,
            then windows + chips) is announced with :func:`~rasterlearn.engine.events.report_total`.
        phases: opens one callback per phase (``scanning windows`` in windows, then ``writing chips`` in
            chips) with its total (:data:`PhaseStart`, e.g. ``Monitor(...).phase``); ``progress`` still
            counts both phases when given too.
        scenes: scenes already resolved by the caller (the run pipeline's, with their own ids, attributes
            and splits), instead of the options' inputs.
        schema: a class schema object (the run YAML's inline classes), instead of ``options.schema``.

    Returns:
        The dataset folder written (``options.output``, or ``<output>-<hash>`` beside a dataset of other
        parameters), its manifest, ``dataset.json`` content and the chips written / already there.

    Raises:
        ConfigError: inputs given twice or not at all, inconsistent options; InputError and subclasses
            for bad inputs; OutputError when the folder cannot be written.
    """
    job = chip_job(options, scenes=scenes, schema=schema)
    job.prepare()
    with _phase(progress, phases, SCAN_PHASE, job.n_windows, job.n_windows) as advance:
        job.scan(advance)
    job.split()
    with _phase(progress, phases, WRITE_PHASE, job.n_to_write, job.n_windows + job.n_to_write) as advance:
        job.write(advance)
    return job.finish()


@contextmanager
def _phase(
    progress: Progress | None, phases: PhaseStart | None, phase: tuple[str, str], total: int, counted: int
) -> Iterator[Progress | None]:
    """One phase's callback: opened by ``phases`` with its ``total`` and closed when the phase ends (also
    counting into ``progress`` when both are given), else ``progress`` told the work it counts up to by the
    end of this phase (``counted``)."""
    report_total(progress, counted)
    if phases is None:
        yield progress
        return
    opened = phases(phase[0], total, phase[1])
    with opened if isinstance(opened, AbstractContextManager) else nullcontext(opened) as advance:
        if progress is None:
            yield advance
            return
        both = progress

        def count(n: int = 1) -> None:
            advance(n)
            both(n)

        yield count


def chip_job(
    options: ChipsOptions, *, scenes: Sequence[Scene] | None = None, schema: ClassSchema | None = None
) -> ChipJob:
    """The :class:`ChipJob` of ``options`` (not started): its scenes (:func:`option_scenes`, or ``scenes``)
    and output folder checked."""
    options.require("output")
    if scenes is None:
        scenes = option_scenes(options)
    elif options.raster or options.image or options.labels or options.label_raster or options.scenes:
        raise ConfigError(
            "Scenes are given twice (as scene objects and in the options' raster/image/labels/scenes); "
            "give one of them"
        )
    return ChipJob(scenes, options, schema=schema)


def option_scenes(options: ChipsOptions) -> list[Scene]:
    """The scenes of ``options``: ``raster`` paired with ``labels`` or ``label_raster`` (one label file for
    every raster, or one each), the dates of one scene in ``image``, or a ``scenes`` CSV."""
    o = options
    if o.image:
        return [_stack_scene(o)]
    if o.scenes is not None:
        if o.raster or o.labels or o.label_raster:
            raise ConfigError("Give either --scenes CSV or --raster with --labels/--label-raster, not both")
        return read_scenes_csv(o.scenes)
    if not o.raster:
        raise ConfigError("No input: give --raster R with --labels V (or --label-raster L), or --scenes CSV")
    labels = o.labels or o.label_raster
    if o.labels and o.label_raster:
        raise ConfigError("Give --labels or --label-raster, not both (use a scenes CSV to mix them)")
    if not labels:
        raise ConfigError("Every --raster needs labels: add --labels V (vector) or --label-raster L")
    if len(labels) == 1:
        labels = labels * len(o.raster)  # one label file for every raster (e.g. a city-wide layer)
    if len(labels) != len(o.raster):
        raise ConfigError(
            f"{len(o.raster)} --raster but {len(labels)} label inputs: give them in pairs, or one "
            f"label file for all rasters"
        )
    if o.labels:
        return [Scene(image=r, labels=v) for r, v in zip(o.raster, labels, strict=True)]
    return [Scene(image=r, label_raster=v) for r, v in zip(o.raster, labels, strict=True)]


def _stack_scene(o: ChipsOptions) -> Scene:
    """One multi-date scene from ``image`` (``--image A --image B ...``) and one label input."""
    if o.raster or o.scenes is not None:
        raise ConfigError("Give --image (once per date of one scene) or --raster/--scenes, not both")
    if len(o.image) < 2:
        raise ConfigError(
            "--image is given once per date: give at least two (--image A.tif --image B.tif); for a "
            "single image use --raster"
        )
    labels = o.labels or o.label_raster
    if len(labels) != 1 or (o.labels and o.label_raster):
        raise ConfigError(
            f"A multi-date scene (--image ...) takes exactly one label input (--labels V or --label-raster "
            f"L); got {len(o.labels) + len(o.label_raster)}"
        )
    return Scene(
        image=o.image[0],
        labels=labels[0] if o.labels else None,
        label_raster=labels[0] if o.label_raster else None,
        later_images=list(o.image[1:]),
        nodata_policy=o.nodata_policy,
    )
