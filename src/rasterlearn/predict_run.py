"""The predict stage: :func:`run_predict` takes one :class:`~rasterlearn.options.PredictOptions` and does
everything ``rasterlearn predict`` does.

* **One scene**: one raster (``raster: [scene.tif]``), or one per date of a multi-date model (``image``),
  mapped into ``output`` (and ``probabilities``) by :func:`rasterlearn.predict.predict_package`; with
  ``vectorize`` the map is then turned into polygons (the background class left out), styled with the
  map's class colours for QGIS.
* **Many scenes**: several rasters, a glob or a ``.txt`` list (``raster``) with ``out_dir``:
  :func:`rasterlearn.batch.predict_scenes` maps each into ``OUT_DIR/<scene>.tif`` (``mosaic``: also
  ``OUT_DIR/mosaic.vrt``). A scene that fails does not stop the others; the result lists it.
* **STAC items** (``stac``, ``assets``): one item's assets stacked on one grid as the raster (in memory, or
  a VRT beside the map for dask workers); several items with ``out_dir``, one ``OUT_DIR/stac/<id>.vrt``
  each. The item is recorded in the outputs' tags and the resume fingerprint.

Blocks run on the executor of ``scheduler``/``workers`` (:func:`rasterlearn.engine.executor.open_executor`;
local threads by default). ``progress`` receives the job's total (pixels of the extent, AOI-clipped) and
the pixels done, between blocks.

Example::

    from rasterlearn.options import PredictOptions
    from rasterlearn.predict import run_predict

    res = run_predict(PredictOptions(model="runs/unet", raster=["scene.tif"], output="map.tif", tta="flips"))
    print(res.one.map_path, res.one.pixels_per_second)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterlearn.errors import InputError, OutputError
from rasterlearn.io.aoi import parse_aoi
from rasterlearn.options import PredictOptions, parse_bands

if TYPE_CHECKING:
    from rasterlearn.batch import ScenesResult
    from rasterlearn.predict import PredictResult

__all__ = ["PredictRunResult", "expand_scenes", "kernel_options", "run_predict", "vectorize_map"]

log = logging.getLogger("rasterlearn.predict")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PredictRunResult:
    """What :func:`run_predict` produced: one scene's :class:`~rasterlearn.predict.PredictResult` (``one``,
    with the polygons written by ``vectorize``) or the many-scene :class:`~rasterlearn.batch.ScenesResult`
    (``scenes``)."""

    one: PredictResult | None = None
    scenes: ScenesResult | None = None
    polygons: Path | None = None
    polygon_count: int = 0

    def failure_message(self) -> str | None:
        """One line naming the scenes that failed (None when every scene was mapped)."""
        if self.scenes is None or not self.scenes.failed:
            return None
        failed, n = self.scenes.failed, len(self.scenes.scenes)
        return (
            f"{len(failed)} of {n} scene(s) failed: "
            + "; ".join(f"{s.raster}: {s.error}" for s in failed)
            + ". The others were mapped; rerun the same command after fixing them (finished maps are skipped)"
        )


def kernel_options(options: PredictOptions) -> dict[str, Any]:
    """The keywords of :func:`rasterlearn.predict.predict_raster` that ``options`` sets (texts parsed: the
    AOI, bands), the same for every scene of the job."""
    return {
        "overlap": options.overlap,
        "blend": options.blend,
        "tta": options.tta,
        "batch_size": options.batch_size,
        "aoi": parse_aoi(options.aoi),
        "threshold": options.threshold,
        "prob_dtype": options.prob_dtype,
        "bands": parse_bands(options.bands),
        "nodata": options.nodata,
        "device": options.device,
        "amp": options.amp,
        "threads": options.threads,
        "io_threads": options.io_threads,
        "blocksize": options.blocksize,
        "memory_mb": options.memory_mb,
        "cache_mb": options.cache_mb,
        "window": options.window,
        "precision": options.precision,
        "runtime": options.runtime,
        "allow_resolution_mismatch": options.allow_resolution_mismatch,
        "allow_dtype_mismatch": options.allow_dtype_mismatch,
        "resume": not options.no_resume,
    }


def run_predict(options: PredictOptions, *, progress: Progress | None = None) -> PredictRunResult:
    """Map the raster(s) of ``options`` with its model package (see the module docs): one scene, a
    multi-date stack, many scenes into ``out_dir`` or STAC items, and the ``vectorize`` post-step.

    Raises:
        InputError: the inputs do not make one job (RASTER and ``image`` or ``stac``, several scenes without
            ``out_dir``, per-scene outputs with ``out_dir``, ``assets`` without ``stac``...), a raster the
            model cannot read, or an output that is an input.
        OutputError: an output exists and ``overwrite`` is False.
        ConfigError: ``scheduler`` and ``workers`` both given, or the dask extra missing.
    """
    options.require("model")
    kwargs = kernel_options(options)
    rasters = options.raster
    scene_kwargs: dict[str, dict[str, Any]] = {}
    if options.stac or options.assets:
        rasters, scene_kwargs = _stac_inputs(options, kwargs)
    if options.out_dir is not None or (rasters is not None and len(rasters) > 1):
        out_dir = _many_scenes_dir(options, rasters)
        scenes = list(rasters or []) if scene_kwargs else expand_scenes(rasters or [])
        if scene_kwargs:
            kwargs["scene_kwargs"] = scene_kwargs
        return PredictRunResult(scenes=_predict_scenes(options, scenes, out_dir, kwargs, progress))
    images, output = _one_scene_inputs(rasters, options.image, options.output)
    return _predict_one(options, images, output, kwargs, progress)


def _many_scenes_dir(options: PredictOptions, rasters: list[str] | None) -> Path:
    """The folder of a several-scene run; the options that only name one scene's outputs are refused."""
    singles = (options.output, options.probabilities, options.vectorize)
    if options.image or any(p is not None for p in singles):
        raise InputError(
            "With several scenes (--out-dir) each map is OUT_DIR/<scene>.tif: drop -o, --probabilities, "
            "--vectorize and --image"
        )
    if options.out_dir is None:
        raise InputError(f"{len(rasters or [])} rasters given: name a folder for their maps with --out-dir")
    return options.out_dir


def _one_scene_inputs(
    rasters: list[str] | None, image: list[Path] | None, output: Path | None
) -> tuple[list[str | Path], Path]:
    """The input(s) of a one-scene run (one raster, or one per date) and its map, checked."""
    raster = rasters[0] if rasters else None
    if (raster is None) == (not image):
        raise InputError("Give the RASTER to map, or one --image per date of a multi-date model (not both)")
    if output is None:
        raise InputError("Name the class map to write with -o/--output (or map many scenes with --out-dir)")
    return (list(image) if image else [str(raster)]), output


def _predict_one(
    options: PredictOptions,
    images: list[str | Path],
    output: Path,
    kwargs: dict[str, Any],
    progress: Progress | None,
) -> PredictRunResult:
    """One raster (or one multi-date stack) into one map, optionally polygons; with ``scheduler`` or
    ``workers`` its blocks are computed on dask workers, blended and written here."""
    from rasterlearn.engine.executor import open_executor
    from rasterlearn.io.paths import check_outputs
    from rasterlearn.predict import predict_package

    model_dir, probabilities, vectorize = options.model, options.probabilities, options.vectorize
    assert model_dir is not None
    check_outputs([model_dir, *images, output, probabilities], [vectorize])
    if vectorize is not None and vectorize.exists() and not options.overwrite:
        raise InputError(f"{vectorize} exists; pass --overwrite or choose another name")
    for p in (output, probabilities):  # before a cluster is started for nothing
        if p is not None and p.exists() and not options.overwrite:
            raise OutputError(f"{p} exists; pass --overwrite or choose another name")
    # the total (pixels of the extent, AOI-clipped) is announced by predict_raster itself
    with open_executor(options.scheduler, options.workers) as executor:
        res = predict_package(
            model_dir,
            images if len(images) > 1 else images[0],
            output,
            probabilities=probabilities,
            overwrite=options.overwrite,
            progress=progress,
            nodata_policy=options.nodata_policy,
            executor=executor,
            **kwargs,
        )
    if vectorize is None:
        return PredictRunResult(one=res)
    count = vectorize_map(output, vectorize, options.min_area)
    return PredictRunResult(one=res, polygons=vectorize, polygon_count=count)


def vectorize_map(class_map: Path, polygons: Path, min_area: float = 0.0) -> int:
    """``predict --vectorize``: the map's classes as polygons, the background class left out, styled with
    the map's class colours (:func:`rasterlearn.vectorize.run_vectorize`, whose polygons a GeoPackage opens
    categorized in QGIS); returns the number of polygons. An existing ``polygons`` file was refused (or
    allowed by ``overwrite``) before the map was predicted."""
    from rasterlearn.class_maps import map_schema
    from rasterlearn.options import VectorizeOptions
    from rasterlearn.vectorize import run_vectorize

    schema = map_schema(class_map)
    bg = schema.background if schema is not None and schema.background in schema.codes else None
    options = VectorizeOptions.model_validate(
        {
            "raster": class_map,
            "output": polygons,
            "min_area": min_area,
            "exclude": None if bg is None else str(bg),
            "overwrite": True,
        }
    )
    return run_vectorize(options).count


def _stac_inputs(
    options: PredictOptions, kwargs: dict[str, Any]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The rasters of the ``stac`` items and each one's provenance.

    One item without ``out_dir``: its stack (in memory, or ``stac/<id>.vrt`` beside the map for dask
    workers, which cannot see this process) with its provenance in ``kwargs["source"]``. Several: one VRT
    each under OUT_DIR/stac and the provenance per scene. ``assets`` without ``stac``, or ``stac`` with a
    RASTER or ``image``, is refused."""
    from rasterlearn.io.stac import stac_scenes, stac_stack

    items, out_dir, output = options.stac, options.out_dir, options.output
    if not items:
        raise InputError("--assets needs --stac ITEM.json (the STAC item whose assets to stack)")
    if options.raster or options.image:
        raise InputError("Give the RASTER(s) to map or --stac ITEM.json, not both")
    names = [a.strip() for a in (options.assets or "").split(",") if a.strip()]
    if out_dir is None and len(items) == 1:
        distributed = options.scheduler is not None or options.workers is not None
        dest = output.parent / "stac" if distributed and output is not None else None
        st = stac_stack(items[0], names) if dest is None else stac_scenes(items, names, dest)[0]
        kwargs["source"] = st.provenance()
        return [st.path], {}
    if out_dir is None:
        raise InputError(f"{len(items)} STAC items given: name a folder for their maps with --out-dir")
    stacks = stac_scenes(items, names, out_dir / "stac")
    return [st.path for st in stacks], {st.path: {"source": st.provenance()} for st in stacks}


def expand_scenes(items: list[str]) -> list[str]:
    """Paths as given, globs expanded (sorted), and ``.txt`` files read as one path per line (relative
    paths are relative to the list's folder; ``#`` starts a comment line)."""
    import glob

    out: list[str] = []
    for item in items:
        if item.lower().endswith(".txt") and Path(item).is_file():
            base = Path(item).parent
            for line in Path(item).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line if "://" in line or line.startswith("/") else str(base / line))
        elif any(ch in item for ch in "*?[") and "://" not in item:
            found = sorted(glob.glob(item))
            if not found:
                raise InputError(f"No raster matches {item!r}")
            out.extend(found)
        else:
            out.append(item)
    return out


def _predict_scenes(
    options: PredictOptions,
    rasters: list[str],
    out_dir: Path,
    kwargs: dict[str, Any],
    progress: Progress | None,
) -> ScenesResult:
    """Many scenes into ``out_dir`` (:func:`rasterlearn.batch.predict_scenes`); the total is announced by
    ``predict_scenes`` once it has counted the scenes still to map."""
    from rasterlearn.batch import predict_scenes
    from rasterlearn.engine.executor import open_executor

    assert options.model is not None
    with open_executor(options.scheduler, options.workers) as ex:
        return predict_scenes(
            options.model,
            rasters,
            out_dir,
            executor=ex,
            mosaic=options.mosaic,
            overwrite=options.overwrite,
            progress=progress,
            **kwargs,
        )
