"""Many scenes in one job: map every raster of a list with one model, spread over an executor's workers.

:func:`predict_scenes` runs :func:`rasterlearn.predict.predict_raster` once per scene (each scene keeps its
own streaming, bounded-memory, resumable prediction) and writes ``OUT_DIR/<scene>.tif``. Scenes are the
unit of work: with a dask executor each worker maps whole scenes, loading the model once per worker
process. A failing scene does not stop the others: its error is recorded and the job reports it at the end.
``OUT_DIR/scenes.json`` lists every scene with its status (``done``, ``skipped`` — a finished map from an
earlier run — or ``failed`` with the one-line reason), windows and seconds; rerunning the job maps only the
scenes not yet done (and resumes a scene interrupted half-way). ``mosaic=True`` adds ``OUT_DIR/mosaic.vrt``
over the finished maps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rasterlearn._util import atomic_write_json, file_sha256
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor, worker_cache
from rasterlearn.errors import InputError, JobCancelledError, RasterlearnError
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.vrt import mosaic_vrt

__all__ = ["SceneStatus", "ScenesResult", "predict_scenes", "scene_outputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneStatus:
    """What happened to one scene."""

    raster: str
    output: str
    status: str  # done | skipped | failed
    error: str | None = None
    seconds: float = 0.0
    windows_predicted: int = 0
    blocks_resumed: int = 0


@dataclass(frozen=True)
class ScenesResult:
    """What :func:`predict_scenes` produced: one status per scene, the summary file and the mosaic."""

    scenes: list[SceneStatus]
    summary_path: Path
    mosaic_path: Path | None = None
    failed: list[SceneStatus] = field(default_factory=list)


def _scene_name(raster: str) -> str:
    name = raster.rstrip("/").split("/")[-1].split("?")[0]
    return Path(name).stem or "scene"


def scene_outputs(rasters: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """``{raster: OUT_DIR/<stem>.tif}``; two scenes with one file name are refused (naming both)."""
    out: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for r in map(str, rasters):
        stem = _scene_name(r)
        if stem in seen:
            raise InputError(
                f"Two scenes would write {stem}.tif: {seen[stem]} and {r}. Rename one, or map them into "
                f"separate --out-dir folders"
            )
        seen[stem] = r
        out[r] = Path(out_dir) / f"{stem}.tif"
    return out


@dataclass(frozen=True)
class _Job:
    package: str
    digest: str
    kwargs: dict[str, Any]
    pkg: Any = None  # the local executor reuses the package loaded by the caller


def _map_scene(job: _Job, item: tuple[str, str, dict[str, Any]]) -> SceneStatus:
    """One scene, on whichever process runs it; failures become a status, cancellation propagates."""
    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    raster, output, own = item
    t0 = time.perf_counter()
    try:
        pkg = job.pkg or worker_cache(("package", job.package, job.digest), lambda: load_package(job.package))
        res = predict_raster(pkg.model, pkg.meta, raster, output, **{**job.kwargs, **own})
    except JobCancelledError:
        raise
    except Exception as exc:  # one scene's failure (bad file, no overlap, disk) must not stop the others
        log.debug("scene %s failed", raster, exc_info=True)
        return SceneStatus(raster, output, "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return SceneStatus(
        raster,
        output,
        "done",
        None,
        time.perf_counter() - t0,
        res.windows_predicted,
        res.blocks_resumed,
    )


def predict_scenes(
    package: str | Path,
    rasters: Sequence[str | Path],
    out_dir: str | Path,
    *,
    executor: BlockExecutor | None = None,
    mosaic: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    scene_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    **predict_kwargs: Any,
) -> ScenesResult:
    """Map every raster in ``rasters`` with the model package into ``out_dir`` (see the module docs).

    ``predict_kwargs`` are :func:`rasterlearn.predict.predict_raster` options (overlap, batch_size, tta,
    device, ...), the same for every scene. ``progress`` counts pixels of finished scenes (and, with the
    local executor, of finished blocks within a scene); the job's total (pixels of the scenes still to map)
    is announced to it once, before the first scene. ``scene_kwargs`` adds options of single scenes
    (``{raster: {"source": ...}}``, e.g. the STAC item a scene's virtual stack came from; see
    :func:`rasterlearn.io.stac.stac_scenes`).

    Raises:
        InputError: no scene, two scenes with one output name, or an output that is an input.
    """
    from rasterlearn.models import load_package

    if not rasters:
        raise InputError("No scenes to map: give rasters, a glob, or a text file of paths")
    out_dir = Path(out_dir)
    outputs = scene_outputs(rasters, out_dir)
    summary = out_dir / "scenes.json"
    mosaic_path = out_dir / "mosaic.vrt" if mosaic else None
    check_outputs([package, *outputs.keys()], [*outputs.values(), summary, mosaic_path])
    out_dir.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor()
    local = isinstance(executor, LocalExecutor)
    digest = file_sha256(Path(package) / "model.safetensors")[:16]
    kwargs = dict(
        predict_kwargs, overwrite=overwrite, model_id=f"{Path(package).resolve().name}@sha256:{digest}"
    )
    if local and progress is not None:
        # a plain function: each scene's own total must not replace the job's (report_total below)
        kwargs["progress"] = lambda n: progress(n)
    job = _Job(str(package), digest, kwargs, load_package(package) if local else None)
    statuses: dict[str, SceneStatus] = {}
    todo: list[tuple[str, str, dict[str, Any]]] = []
    for raster, output in outputs.items():
        if output.exists() and not overwrite:
            statuses[raster] = SceneStatus(raster, str(output), "skipped", "finished map from an earlier run")
            log.info("%s: %s exists, skipped (--overwrite maps it again)", raster, output)
        else:
            todo.append((raster, str(output), dict((scene_kwargs or {}).get(raster, {}))))
    sizes = {r: _pixels(r, predict_kwargs.get("aoi")) for r, _, _ in todo}
    report_total(progress, sum(sizes.values()))
    with output_lock(summary):
        for (raster, _, _), status in executor.map(_map_scene, todo, job):
            statuses[raster] = status
            if status.status == "failed":
                log.error("Scene %s failed: %s", raster, status.error)
            if progress is not None and not local:
                progress(sizes[raster])
            _write_summary(summary, [statuses[str(r)] for r in outputs if str(r) in statuses])
        ordered = [statuses[str(r)] for r in outputs]
        _write_summary(summary, ordered)
    finished = [Path(s.output) for s in ordered if s.status in ("done", "skipped")]
    if mosaic_path is not None and finished:
        mosaic_vrt(finished, mosaic_path)
    return ScenesResult(
        ordered,
        summary,
        mosaic_path if finished and mosaic else None,
        [s for s in ordered if s.status == "failed"],
    )


def _pixels(raster: str, aoi: Any = None) -> int:
    """The pixels :func:`rasterlearn.predict.predict_raster` counts for ``raster``: its extent, clipped to
    the AOI's window when there is one."""
    from rasterlearn.io.aoi import resolve_aoi

    try:
        with RasterReader(raster) as r:
            extent = r.grid.window if aoi is None else resolve_aoi(aoi, r.grid).window
            return extent.height * extent.width
    except RasterlearnError:  # reported as the scene's failure when it runs
        return 0


def _write_summary(path: Path, statuses: list[SceneStatus]) -> None:
    atomic_write_json(
        path,
        {
            "scenes": [asdict(s) for s in statuses],
            "done": sum(s.status == "done" for s in statuses),
            "skipped": sum(s.status == "skipped" for s in statuses),
            "failed": sum(s.status == "failed" for s in statuses),
        },
    )
