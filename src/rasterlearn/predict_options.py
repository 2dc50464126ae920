"""The keyword options of :func:`rasterlearn.predict.predict_raster` as one value, :class:`JobOptions`
(documented here, once), and as the stage's options model (:meth:`JobOptions.as_options`), from which the
job's resume fingerprint is built (:func:`rasterlearn.predict_job.provenance`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.io.stack import NodataPolicy
from rasterlearn.predict_blend import BlendMode, ProbDtype
from rasterlearn.predict_runtime import Precision, Runtime, parse_tta

if TYPE_CHECKING:
    from rasterlearn.options import PredictOptions

__all__ = ["JobOptions"]


@dataclass(frozen=True)
class JobOptions:
    """The keyword options of :func:`rasterlearn.predict.predict_raster`, one field per keyword.

    Attributes:
        probabilities: optional probability raster path, one band per class (binary: the foreground
            probability only).
        overlap: fraction of the model's *chip size* that neighbouring windows share (0 <= overlap < 1):
            the seam zone keeps the context the model was trained with, whatever the window size.
        window: inference window side in pixels (or (rows, cols)), a multiple of the network's output
            stride (32 for smp encoders). Default: chosen from ``memory_mb`` -- the largest window that
            tiles the extent evenly within the budget, at least the chip size (see
            :func:`rasterlearn.predict_plan.plan_inference`). Recorded in the outputs' ``parameters`` tag
            and part of the resume fingerprint.
        blend: ``hann`` (default), ``center-crop`` or ``none``; probabilities (not logits) are blended.
        tta: test-time augmentations averaged with the identity (``hflip``, ``vflip``, ``rot90``,
            ``rot180``, ``rot270`` or ``flips``/``rotations``/``all``).
        batch_size: windows per model call (may span window rows); default: derived from ``memory_mb``
            (on CPU one large window per call).
        aoi: a vector file, shapely geometry (raster CRS) or bounds; pixels outside are nodata.
        threshold: binary models: foreground when probability >= threshold (default: the package's).
        prob_dtype: ``uint8`` (probability x 254, nodata 255) or ``float32`` (nodata NaN).
        bands: raster bands (1-based indexes or descriptions) feeding the model, overriding the matching
            of the model's band names.
        nodata: input nodata value to use when the raster declares none.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        amp: mixed precision (autocast) on CUDA.
        precision: ``auto`` (fp16 autocast on CUDA with ``amp``, fp32 on CPU), ``fp32``, or ``bf16`` (CPU:
            used only when the CPU has native bf16 and a check on the first window agrees with fp32; else
            fp32 with a logged reason). See :mod:`rasterlearn.predict_runtime`.
        runtime: ``torch`` (default) or ``onnx``: the network exported to ONNX and run by ONNX Runtime on
            the CPU (needs ``rasterlearn[onnx]``; probabilities within 1e-4 of torch).
        threads: torch CPU threads (default: torch's choice).
        io_threads: reader threads, each with its own dataset handle.
        blocksize: output block size (COG tiles; flush and resume granularity).
        memory_mb: working-memory budget (MB on top of the imports) for the model's activations, the
            batches read ahead and the score accumulator: it sets the default window and batch size, and
            rasters too wide for it are processed in column stripes.
        cache_mb: GDAL block cache bound (MB) during the job, the COG conversion of the outputs included
            (16: a window row reads a few MB of tiles; more cache only holds blocks that are not read again).
        overwrite: replace existing outputs.
        resume: continue an interrupted run of the same job (same fingerprint) instead of starting afresh.
        commit_every_s: minimum seconds between progress commits (0: after every finished block row).
        model_id: identifies the model in provenance/fingerprint (default: a digest of its weights).
        allow_resolution_mismatch: predict although the pixel size is more than 25 % off the training
            ``gsd`` (else an :class:`InputError`); allow_dtype_mismatch: likewise for a raster whose dtype
            and values are far from the training data's (see :func:`rasterlearn.compat.check_imagery`).
        nodata_policy: multi-date input: ``all-valid`` (nodata in any date is nodata) or ``any-valid``.
        source: what the outputs record about where the raster came from beyond its path, e.g. a STAC item's
            id and asset hrefs (:meth:`rasterlearn.io.stac.StacStack.provenance`); stored as tags of the
            outputs and part of the resume fingerprint.
        executor: where the windows are read and run through the model (see
            :mod:`rasterlearn.predict_chunks`): None or a
            :class:`~rasterlearn.engine.executor.LocalExecutor` run them in this process (reader threads,
            the model in this thread); a :class:`~rasterlearn.engine.executor.DaskExecutor` on its workers
            (the raster must be readable from them; the model is sent to each worker once and runs with
            ``threads`` torch threads, default 1). Blending, writing and the journal stay in this process,
            so the outputs are byte-identical and a job resumes on either executor; the executor is
            recorded in the ``inference`` tag, not in the fingerprint.
    """

    probabilities: str | Path | None
    overlap: float
    window: int | Sequence[int] | None
    blend: BlendMode
    tta: str | Sequence[str] | None
    batch_size: int | None
    aoi: Any
    threshold: float | None
    prob_dtype: ProbDtype
    bands: Sequence[int | str] | None
    nodata: float | None
    device: str
    amp: bool
    precision: Precision
    runtime: Runtime
    threads: int | None
    io_threads: int
    blocksize: int
    memory_mb: float
    cache_mb: int
    overwrite: bool
    resume: bool
    commit_every_s: float
    model_id: str | None
    allow_resolution_mismatch: bool
    allow_dtype_mismatch: bool
    nodata_policy: NodataPolicy
    source: Mapping[str, Any] | None
    executor: BlockExecutor | None

    def as_options(self) -> PredictOptions:
        """These options as the stage's options model: the values this job runs with, whichever way it
        was called (:func:`rasterlearn.predict.run_predict` or ``predict_raster``'s keywords), so one job
        has one fingerprint. Canonical text where the model holds text (TTA groups expanded, band lists
        and bounds comma-joined); what the model cannot hold (a geometry AOI, a (rows, cols) window) is
        pinned by the resolved ``parameters`` beside it in the fingerprint. The files the job reads and
        writes are fingerprinted by identity, not here (see :func:`rasterlearn.predict_job.provenance`).

        Raises:
            InputError: a value the options model refuses (named, with what it expects).
        """
        from pydantic import ValidationError

        from rasterlearn.errors import InputError
        from rasterlearn.options import PredictOptions, describe_validation_error

        names = set(PredictOptions.model_fields) - {"window", "tta", "aoi", "bands", "probabilities"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        win = self.window
        if isinstance(win, Sequence):  # (rows, cols)
            win = win[0] if len(set(win)) == 1 else None
        aoi = self.aoi
        if aoi is not None and not isinstance(aoi, str | Path):
            is_bounds = isinstance(aoi, Sequence) and len(aoi) == 4
            aoi = ",".join(str(float(v)) for v in aoi) if is_bounds else "geometry/extent"
        tta = parse_tta(self.tta)
        values |= {
            "window": win,
            "tta": list(tta) or None,
            "aoi": None if aoi is None else str(aoi),
            "bands": self.bands if self.bands is None or isinstance(self.bands, str) else list(self.bands),
            "probabilities": self.probabilities,
            "no_resume": not self.resume,
        }
        try:
            return PredictOptions.model_validate(values)
        except ValidationError as exc:
            raise InputError(f"predict options: {describe_validation_error(exc, PredictOptions)}") from exc
