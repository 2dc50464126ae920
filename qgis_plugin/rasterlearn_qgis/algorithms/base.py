"""The one base class of every rasterlearn Processing algorithm.

It declares QGIS parameters from the algorithm's :class:`~rasterlearn_qgis.specs.AlgoSpec`, converts the
user's values to plain values (exporting layers that are not plain files to temporary files), builds the CLI
argument list (:func:`~rasterlearn_qgis.specs.build_args`), runs it out of process
(:func:`~rasterlearn_qgis.runner.run_cli`) with the Processing feedback driving progress, log and cancel,
raises :class:`QgsProcessingException` with the CLI's one-line message on failure, and styles the outputs.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsRasterFileWriter,
    QgsRasterPipe,
)
from qgis.PyQt.QtGui import QIcon

from .. import settings
from ..compat import qenum
from ..runner import error_message, run_cli, supports_progress_json
from ..specs import OUTPUT_KINDS, AlgoSpec, P, build_args, spec_by_id
from ..styling import style_output

__all__ = ["RasterlearnAlgorithm"]

_ICON = str(Path(__file__).resolve().parents[1] / "icon.png")


def _param(p: P) -> QgsProcessingParameterDefinition:
    opt = p.optional
    k = p.kind
    if k == "raster":
        d = QgsProcessingParameterRasterLayer(p.name, p.label, optional=opt)
    elif k == "vector":
        any_geom = qenum("Qgis.ProcessingSourceType.VectorAnyGeometry", "QgsProcessing.TypeVectorAnyGeometry")
        d = QgsProcessingParameterFeatureSource(p.name, p.label, [any_geom], optional=opt)
    elif k == "field":
        d = QgsProcessingParameterField(p.name, p.label, None, p.parent, optional=opt)
    elif k == "bands":
        d = QgsProcessingParameterBand(p.name, p.label, None, p.parent, optional=True, allowMultiple=True)
    elif k in ("file", "folder"):
        behavior = qenum(
            f"Qgis.ProcessingFileParameterBehavior.{'File' if k == 'file' else 'Folder'}",
            f"QgsProcessingParameterFile.{'File' if k == 'file' else 'Folder'}",
        )
        d = QgsProcessingParameterFile(p.name, p.label, behavior=behavior, optional=opt)
    elif k in ("int", "float"):
        ntype = qenum(
            f"Qgis.ProcessingNumberParameterType.{'Integer' if k == 'int' else 'Double'}",
            f"QgsProcessingParameterNumber.{'Integer' if k == 'int' else 'Double'}",
        )
        d = QgsProcessingParameterNumber(p.name, p.label, ntype, p.default, opt)
        if p.minimum is not None:
            d.setMinimum(p.minimum)
        if p.maximum is not None:
            d.setMaximum(p.maximum)
    elif k == "bool":
        d = QgsProcessingParameterBoolean(p.name, p.label, bool(p.default), optional=True)
    elif k == "enum":
        default = p.options.index(p.default) if p.default in p.options else None
        d = QgsProcessingParameterEnum(p.name, p.label, list(p.options), False, default, opt)
    elif k == "string":
        d = QgsProcessingParameterString(p.name, p.label, p.default, optional=opt)
    elif k == "extent":
        d = QgsProcessingParameterExtent(p.name, p.label, optional=opt)
    elif k == "crs":
        d = QgsProcessingParameterCrs(p.name, p.label, optional=opt)
    elif k == "out_raster":
        d = QgsProcessingParameterRasterDestination(p.name, p.label, optional=opt, createByDefault=not opt)
    elif k == "out_vector":
        poly = qenum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.TypeVectorPolygon")
        d = QgsProcessingParameterVectorDestination(
            p.name, p.label, poly, optional=opt, createByDefault=not opt
        )
    elif k == "out_file":
        d = QgsProcessingParameterFileDestination(
            p.name, p.label, p.file_filter, optional=opt, createByDefault=not opt
        )
    elif k == "out_folder":
        d = QgsProcessingParameterFolderDestination(p.name, p.label, optional=opt, createByDefault=not opt)
    else:  # pragma: no cover - specs are checked by the unit tests
        raise ValueError(f"unknown parameter kind {k!r}")
    if p.advanced:
        adv = qenum("Qgis.ProcessingParameterFlag.Advanced", "QgsProcessingParameterDefinition.FlagAdvanced")
        d.setFlags(d.flags() | adv)
    if p.help and hasattr(d, "setHelp"):
        d.setHelp(p.help)
    return d


def _unset(parameters: dict[str, Any], name: str) -> bool:
    v = parameters.get(name)
    return v is None or (isinstance(v, str) and v == "")


class RasterlearnAlgorithm(QgsProcessingAlgorithm):
    """Runs one rasterlearn CLI command; subclasses set ``SPEC_ID`` and may add outputs."""

    SPEC_ID = ""

    def __init__(self) -> None:
        super().__init__()
        self.spec: AlgoSpec = spec_by_id(self.SPEC_ID)

    # -- identity ------------------------------------------------------------------------------------
    def name(self) -> str:
        return self.spec.id

    def displayName(self) -> str:
        return self.spec.name

    def group(self) -> str:
        return self.spec.group

    def groupId(self) -> str:
        return self.spec.group.lower()

    def shortHelpString(self) -> str:
        cmd = " ".join(self.spec.command)
        return f"{self.spec.help}\n\nRuns 'rasterlearn {cmd}' in its own environment (see the plugin's settings)."

    def icon(self) -> QIcon:
        return QIcon(_ICON)

    def createInstance(self) -> RasterlearnAlgorithm:
        return type(self)()

    def initAlgorithm(self, config: Any = None) -> None:
        for p in self.spec.params:
            self.addParameter(_param(p))

    def checkParameterValues(self, parameters: dict[str, Any], context: Any) -> tuple[bool, str]:
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        for group in self.spec.one_of:
            given = [n for n in group if not _unset(parameters, n)]
            if len(given) != 1:
                labels = " or ".join(repr(self._spec_param(n).label) for n in group)
                what = "both" if given else "neither"
                return False, f"Give exactly one of {labels} ({what} given)"
        return True, ""

    # -- running ---------------------------------------------------------------------------------------
    def plain_values(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:
        """QGIS parameter values as plain values: paths as text, band lists, extents as tuples."""
        out: dict[str, Any] = {}
        raster_crs = None
        for p in self.spec.params:
            n, k = p.name, p.kind
            if k == "raster":
                layer = self.parameterAsRasterLayer(parameters, n, context)
                if layer is None:
                    out[n] = None
                    continue
                if raster_crs is None:  # extents are in the first raster's CRS (the input)
                    raster_crs = layer.crs()
                out[n] = self._raster_path(layer, context, feedback)
            elif k == "vector":
                if _unset(parameters, n):
                    out[n] = None
                    continue
                out[n] = self.parameterAsCompatibleSourceLayerPath(
                    parameters, n, context, ["gpkg", "shp", "geojson", "fgb"], "gpkg", feedback
                )
            elif k == "field":
                fields = self.parameterAsFields(parameters, n, context)
                out[n] = fields[0] if fields else None
            elif k == "bands":
                out[n] = [int(b) for b in (self.parameterAsInts(parameters, n, context) or [])]
            elif k in ("file", "folder"):
                out[n] = self.parameterAsFile(parameters, n, context) or None
            elif k in ("int", "float"):
                if _unset(parameters, n):
                    out[n] = None if p.optional else p.default
                else:
                    f = self.parameterAsInt if k == "int" else self.parameterAsDouble
                    out[n] = f(parameters, n, context)
            elif k == "bool":
                out[n] = self.parameterAsBool(parameters, n, context)
            elif k == "enum":
                out[n] = (
                    None
                    if _unset(parameters, n) and p.default is None
                    else p.options[self.parameterAsEnum(parameters, n, context)]
                )
            elif k == "string":
                out[n] = self.parameterAsString(parameters, n, context) or None
            elif k == "extent":
                if _unset(parameters, n):
                    out[n] = None
                    continue
                r = self.parameterAsExtent(parameters, n, context, raster_crs) if raster_crs else None
                if r is None:
                    r = self.parameterAsExtent(parameters, n, context)
                out[n] = (
                    None
                    if r is None or r.isNull()
                    else (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())
                )
            elif k == "crs":
                crs = None if _unset(parameters, n) else self.parameterAsCrs(parameters, n, context)
                out[n] = None if crs is None or not crs.isValid() else (crs.authid() or crs.toWkt())
            elif k in ("out_raster", "out_vector"):
                out[n] = self.parameterAsOutputLayer(parameters, n, context) or None
            elif k in ("out_file", "out_folder"):
                out[n] = self.parameterAsFileOutput(parameters, n, context) or None
        for n, v in out.items():
            if (
                v is not None
                and self._spec_param(n).kind in OUTPUT_KINDS
                and self._spec_param(n).kind != "out_folder"
            ):
                Path(v).parent.mkdir(parents=True, exist_ok=True)
        return out

    def _spec_param(self, name: str) -> P:
        return next(p for p in self.spec.params if p.name == name)

    def _raster_path(self, layer: Any, context: Any, feedback: Any) -> str:
        """The layer's file, or a temporary GeoTIFF copy when it is not a plain GDAL file."""
        src = layer.source()
        if layer.providerType() == "gdal" and os.path.exists(src):
            return src
        tmp = QgsProcessingUtils.generateTempFilename(f"{layer.name() or 'raster'}.tif")
        feedback.pushInfo(f"Exporting raster layer {layer.name()!r} to {tmp}")
        pipe = QgsRasterPipe()
        provider = layer.dataProvider()
        if not pipe.set(provider.clone()):
            raise QgsProcessingException(
                f"Cannot read raster layer {layer.name()!r}; save it as a GeoTIFF first"
            )
        writer = QgsRasterFileWriter(tmp)
        err = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), provider.crs())
        if err != 0:
            raise QgsProcessingException(
                f"Cannot export raster layer {layer.name()!r} (error {err}); save it as a GeoTIFF first"
            )
        return tmp

    def command(self, values: dict[str, Any]) -> list[str]:
        exe = settings.executable()
        if exe is None:
            raise QgsProcessingException(
                "rasterlearn is not installed for this plugin: use Plugins > rasterlearn > Set up rasterlearn, "
                "or set the executable in Settings > Options > rasterlearn (or $RASTERLEARN_EXECUTABLE)"
            )
        progress = self.spec.progress and supports_progress_json(exe)
        return [exe, *build_args(self.spec, values, device=settings.device(), progress_json=progress)]

    def processAlgorithm(self, parameters: dict[str, Any], context: Any, feedback: Any) -> dict[str, Any]:
        values = self.plain_values(parameters, context, feedback)
        cmd = self.command(values)
        feedback.pushCommandInfo(" ".join(shlex.quote(c) for c in cmd))

        def on_event(ev: dict[str, Any], state: Any) -> None:
            kind = ev["event"]
            if kind == "phase":
                feedback.setProgressText(f"{state.job or self.spec.id}: {ev.get('phase')}")
                feedback.setProgress(0.0)
            elif kind == "progress":
                feedback.setProgress(state.percent)
            elif kind == "finished":
                feedback.setProgress(100.0)
            elif kind == "log":
                level, msg = ev.get("level", "info"), str(ev.get("message", ""))
                if level in ("warning", "error"):
                    feedback.pushWarning(msg) if hasattr(feedback, "pushWarning") else feedback.reportError(
                        msg, False
                    )
                elif level == "debug":
                    feedback.pushDebugInfo(msg)
                else:
                    feedback.pushInfo(msg)

        result = run_cli(
            cmd, on_event=on_event, on_text=feedback.pushConsoleInfo, is_cancelled=feedback.isCanceled
        )
        if result.stdout.strip() and self.spec.progress:
            feedback.pushConsoleInfo(result.stdout.rstrip())
        if result.cancelled:
            raise QgsProcessingException(
                f"Cancelled: nothing was written under the output names; run {self.spec.name!r} again "
                "with the same parameters to resume"
            )
        if not result.ok:
            raise QgsProcessingException(error_message(result))
        feedback.setProgress(100.0)
        outputs = {p.name: values.get(p.name) for p in self.spec.params if p.kind in OUTPUT_KINDS}
        outputs.update(self.post_process(values, result, feedback))
        for name, kind in self.spec.styles.items():
            path = outputs.get(name)
            if path:
                style_output(kind, path, map_path=self.class_map_for(name, values))
        return outputs

    def class_map_for(self, output: str, values: dict[str, Any]) -> str | None:
        """The class map whose colours polygons take (predict's map, vectorize's input)."""
        return values.get("OUTPUT") if output != "OUTPUT" else values.get("INPUT")

    def post_process(self, values: dict[str, Any], result: Any, feedback: Any) -> dict[str, Any]:
        """Extra outputs read from the run (subclasses)."""
        return {}
