"""Headless QGIS driver for the plugin tests: run with Debian's /usr/bin/python3 (which has qgis.core), never
with the project's venv. ``python3 qgis_driver.py PLUGINS_DIR JOB.json`` starts QgsApplication (offscreen),
initializes Processing, registers the rasterlearn provider from PLUGINS_DIR, runs the job's steps and prints
one JSON object (the results of each step) on the last line of stdout."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsVectorLayer,
)

app = QgsApplication([], False)
app.initQgis()
for path in ("/usr/share/qgis/python/plugins", sys.argv[1]):
    if path not in sys.path:
        sys.path.insert(0, path)
import processing  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
from rasterlearn_qgis.provider import RasterlearnProvider  # noqa: E402

provider = RasterlearnProvider()
QgsApplication.processingRegistry().addProvider(provider)


class Recorder(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.console: list[str] = []
        self.cancelled_at: float | None = None
        self.cancel_at_progress: float | None = None  # cancel once progress reaches this percent
        self.progressChanged.connect(self._progress)

    def _progress(self, value: float) -> None:
        self.values.append(value)
        at = self.cancel_at_progress
        if at is not None and 0 < value < 100 and value >= at and not self.isCanceled():
            self.cancelled_at = time.monotonic()
            self.cancel()

    def pushConsoleInfo(self, info: str) -> None:
        self.console.append(info)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)

    def pushWarning(self, warning: str) -> None:
        self.warnings.append(warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.warnings.append(error)


def color(c) -> str:
    return c.name()


def layer_param(value):
    """{"memory": path} -> a memory layer copy; {"selected": path, "where": expr} -> selected features only."""
    from qgis.core import QgsFeatureRequest, QgsProcessingFeatureSourceDefinition, QgsProject

    if not isinstance(value, dict):
        return value
    if "memory" in value:
        src = QgsVectorLayer(value["memory"], "src", "ogr")
        mem = src.materialize(QgsFeatureRequest())
        QgsProject.instance().addMapLayer(mem)
        assert mem.providerType() == "memory"
        return mem.id()
    layer = QgsVectorLayer(value["selected"], "sel", "ogr")
    QgsProject.instance().addMapLayer(layer)
    layer.selectByExpression(value["where"])
    return QgsProcessingFeatureSourceDefinition(layer.id(), True)


def run(step: dict) -> dict:
    step = {**step, "params": {k: layer_param(v) for k, v in step["params"].items()}}
    fb = Recorder()
    timer = None
    if step.get("cancel_after") is not None:
        timer = threading.Timer(step["cancel_after"], fb.cancel)
        timer.start()
    at = step.get("cancel_at_progress")
    fb.cancel_at_progress = None if at is None or at is False else (0.0 if at is True else float(at))
    t0 = time.monotonic()
    out: dict = {}
    try:
        res = processing.run(step["alg"], step["params"], feedback=fb)
        out["ok"] = True
        out["results"] = {k: v for k, v in res.items() if isinstance(v, (str, int, float, type(None)))}
    except QgsProcessingException as exc:
        out["ok"] = False
        out["error"] = str(exc)
    finally:
        if timer is not None:
            timer.cancel()
    if fb.cancelled_at is not None:
        out["cancel_to_end_s"] = time.monotonic() - fb.cancelled_at
    out.update(
        elapsed=time.monotonic() - t0,
        progress=fb.values,
        infos=fb.infos,
        warnings=fb.warnings,
        console=fb.console,
    )
    return out


def raster_style(path: str) -> dict:
    layer = QgsRasterLayer(path, "r")
    r = layer.renderer()
    out = {"valid": layer.isValid(), "bands": layer.bandCount(), "renderer": r.type() if r else None}
    if r is not None and r.type() == "paletted":
        out["classes"] = [[int(c.value), c.label, color(c.color)] for c in r.classes()]
    if r is not None and r.type() == "singlebandpseudocolor":
        out["min"], out["max"] = r.classificationMin(), r.classificationMax()
    if r is not None and r.type() == "multibandcolor":
        out["rgb"] = [r.redBand(), r.greenBand(), r.blueBand()]
    return out


def vector_style(path: str) -> dict:
    layer = QgsVectorLayer(path, "v", "ogr")
    r = layer.renderer()
    out = {"valid": layer.isValid(), "count": layer.featureCount(), "renderer": r.type() if r else None}
    if r is not None and r.type() == "categorizedSymbol":
        out["field"] = r.classAttribute()
        out["categories"] = [[c.value(), c.label(), color(c.symbol().color())] for c in r.categories()]
    return out


class _Patched:
    """Replace module attributes for one step, restoring them afterwards."""

    def __init__(self, *triples) -> None:
        self.triples = triples
        self.saved: list = []

    def __enter__(self) -> None:
        for obj, name, value in self.triples:
            self.saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    def __exit__(self, *exc) -> None:
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)


def _message_boxes(answer_yes: bool, shown: list):
    """A QMessageBox stand-in recording (kind, title, text) and answering question() with Yes or No."""
    from qgis.PyQt.QtWidgets import QMessageBox

    class Box:
        StandardButton = QMessageBox.StandardButton

        @staticmethod
        def question(parent, title, text, *args, **kwargs):
            shown.append(["question", title, text])
            return QMessageBox.StandardButton.Yes if answer_yes else QMessageBox.StandardButton.No

        @staticmethod
        def information(parent, title, text, *args, **kwargs):
            shown.append(["information", title, text])

        @staticmethod
        def warning(parent, title, text, *args, **kwargs):
            shown.append(["warning", title, text])

    return Box


def setup_action(step: dict) -> dict:
    """'Set up rasterlearn' with uv at step["uv"] and the GPU step["gpu"] (None: none): the message shown and
    the commands it runs (recorded, not executed; no network) when the user answers step["accept"]."""
    import types

    from qgis.core import QgsSettings
    from rasterlearn_qgis import install, settings
    from rasterlearn_qgis import plugin as plugin_mod

    shown: list = []
    ran: list = []

    def fake_run(cmd, **kwargs):
        import subprocess

        ran.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, "ok\n", "")

    plugin = plugin_mod.RasterlearnPlugin(None)
    with _Patched(
        (plugin_mod, "QMessageBox", _message_boxes(bool(step["accept"]), shown)),
        (
            plugin_mod,
            "shutil",
            types.SimpleNamespace(which=lambda name: step["uv"] if name == "uv" else None),
        ),
        (plugin_mod, "subprocess", types.SimpleNamespace(run=fake_run)),
        (install, "detect_cuda", lambda *a, **k: step["gpu"]),
    ):
        plugin.setup()
        manager = QgsApplication.taskManager()
        deadline = time.monotonic() + 60
        while step["accept"] and time.monotonic() < deadline:  # the task runs on QGIS' task manager
            app.processEvents()
            if manager.countActiveTasks() == 0:
                break
            time.sleep(0.05)
        app.processEvents()
    return {
        "shown": shown,
        "ran": ran,
        "env_dir": str(settings.private_env_dir()),
        "executable_setting": QgsSettings().value("rasterlearn/executable", "", type=str),
    }


def settings_dialog(step: dict) -> dict:
    """Save through the Settings dialog and the options page, load again, and the command it configures."""
    from rasterlearn_qgis import settings
    from rasterlearn_qgis.algorithms import ALGORITHM_CLASSES
    from rasterlearn_qgis.options import RasterlearnOptionsFactory, SettingsDialog

    out: dict = {}
    d = SettingsDialog()
    d.form.exe.setFilePath(step["exe"])
    d.form.device.setCurrentText("cuda:1")
    d._ok()
    out["saved"] = [settings.executable(), settings.device(), d.result()]
    d2 = SettingsDialog()
    out["loaded"] = [d2.form.exe.filePath(), d2.form.device.currentText()]
    predict = next(c for c in ALGORITHM_CLASSES if c.SPEC_ID == "predict")()
    out["predict_command"] = predict.command({"MODEL": "/m", "INPUT": "/i.tif", "OUTPUT": "/o.tif"})
    d2.form.device.setCurrentText("mps")
    d2.reject()  # Cancel keeps the saved values
    out["after_cancel"] = settings.device()
    page = RasterlearnOptionsFactory().createWidget(None)
    out["page_loaded"] = [page.form.exe.filePath(), page.form.device.currentText()]
    page.form.device.setCurrentText("tpu")
    page.apply()
    out["unknown_device"] = settings.device()
    page.form.device.setCurrentText("cpu")
    page.apply()
    out["page_saved"] = settings.device()
    settings.set_executable("")
    settings.set_device("auto")
    return out


def check_action(step: dict) -> dict:
    """'Check installation' with the configured executable: what the message box says."""
    from rasterlearn_qgis import plugin as plugin_mod
    from rasterlearn_qgis import settings

    shown: list = []
    settings.set_executable(step["exe"])
    settings.set_device("cpu")
    with _Patched((plugin_mod, "QMessageBox", _message_boxes(False, shown))):
        plugin_mod.RasterlearnPlugin(None).check()
    settings.set_executable("")
    settings.set_device("auto")
    return {"shown": shown}


def main() -> None:
    with open(sys.argv[2], encoding="utf-8") as fh:
        job = json.load(fh)
    results = []
    for step in job:
        op = step["op"]
        try:
            if op == "algorithms":
                results.append(sorted(a.id() for a in provider.algorithms()))
            elif op == "run":
                results.append(run(step))
            elif op == "raster_style":
                results.append(raster_style(step["path"]))
            elif op == "exists":
                results.append(os.path.exists(step["path"]))
            elif op == "vector_style":
                results.append(vector_style(step["path"]))
            elif op == "setup_action":
                results.append(setup_action(step))
            elif op == "settings_dialog":
                results.append(settings_dialog(step))
            elif op == "check_action":
                results.append(check_action(step))
            else:
                results.append({"error": f"unknown op {op}"})
        except Exception:
            results.append({"exception": traceback.format_exc()})
    sys.stdout.write("\n" + json.dumps(results) + "\n")
    sys.stdout.flush()


main()
app.exitQgis()
