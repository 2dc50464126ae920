"""The QGIS plugin object: registers the Processing provider; menu actions for setup, check and settings."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

from qgis.core import QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from . import install, settings
from .provider import RasterlearnProvider

__all__ = ["RasterlearnPlugin"]

_MENU = "&rasterlearn"


class RasterlearnPlugin:
    """Plugin entry object (``classFactory``); works without an interface (headless, qgis_process)."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: RasterlearnProvider | None = None
        self.actions: list[Any] = []
        self.options_factory: Any = None
        self._task: Any = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = RasterlearnProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        if self.iface is None:
            return
        for label, slot in (
            ("Set up rasterlearn…", self.setup),
            ("Check installation", self.check),
            ("Settings…", self.show_settings),
        ):
            action = QAction(label, self.iface.mainWindow())
            action.triggered.connect(slot)
            self.iface.addPluginToMenu(_MENU, action)
            self.actions.append(action)
        try:
            from .options import RasterlearnOptionsFactory

            self.options_factory = RasterlearnOptionsFactory()
            self.iface.registerOptionsWidgetFactory(self.options_factory)
        except Exception as exc:  # an old QGIS without options pages: the Settings… dialog remains
            QgsMessageLog.logMessage(f"No options page: {exc}", "rasterlearn")

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.iface is not None:
            for action in self.actions:
                self.iface.removePluginMenu(_MENU, action)
            if self.options_factory is not None:
                self.iface.unregisterOptionsWidgetFactory(self.options_factory)
        self.actions = []

    # -- actions --------------------------------------------------------------------------------------
    def _parent(self) -> Any:
        return self.iface.mainWindow() if self.iface is not None else None

    def setup(self) -> None:
        """Create the private environment with uv, after showing the exact commands."""
        uv = shutil.which("uv")
        if uv is None:
            QMessageBox.information(
                self._parent(),
                "Set up rasterlearn",
                "uv is needed to create rasterlearn's own environment (QGIS' Python is never modified).\n\n"
                "Install it first: https://docs.astral.sh/uv/getting-started/installation/\n"
                "(Linux/macOS: curl -LsSf https://astral.sh/uv/install.sh | sh; "
                'Windows: powershell -c "irm https://astral.sh/uv/install.ps1 | iex"), then run this again.',
            )
            return
        gpu = install.detect_cuda()
        env_dir = settings.private_env_dir()
        cmds = install.setup_commands(uv, env_dir, cuda=gpu is not None)
        text = "\n".join(shlex.join(c) for c in cmds)
        answer = QMessageBox.question(
            self._parent(),
            "Set up rasterlearn",
            f"{'NVIDIA GPU found: ' + gpu + ' - CUDA' if gpu else 'No NVIDIA GPU found - CPU-only'} PyTorch wheels.\n"
            f"These commands will create {env_dir} (proxies: HTTP_PROXY/HTTPS_PROXY are honoured):\n\n{text}\n\nRun them now?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return

        def run(task: Any) -> str:
            for i, cmd in enumerate(cmds):
                QgsMessageLog.logMessage(f"$ {shlex.join(cmd)}", "rasterlearn")
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                QgsMessageLog.logMessage(proc.stdout + proc.stderr, "rasterlearn")
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"'{shlex.join(cmd)}' failed with code {proc.returncode}: {proc.stderr[-500:]}"
                    )
                task.setProgress(100.0 * (i + 1) / len(cmds))
            settings.set_executable(str(install.env_executable(env_dir)))
            return str(install.env_executable(env_dir))

        def done(exception: Any, result: Any = None) -> None:
            msg = f"rasterlearn installed: {result}" if exception is None else f"Setup failed: {exception}"
            QgsMessageLog.logMessage(msg, "rasterlearn")
            if self.iface is not None:
                self.iface.messageBar().pushMessage("rasterlearn", msg)

        self._task = QgsTask.fromFunction("Set up rasterlearn", run, on_finished=done)
        QgsApplication.taskManager().addTask(self._task)

    def check(self) -> None:
        """Versions, device and a one-window smoke run, in a message box."""
        exe = settings.executable()
        if exe is None:
            QMessageBox.warning(
                self._parent(), "rasterlearn", "rasterlearn was not found: use Set up rasterlearn."
            )
            return
        try:
            proc = subprocess.run(
                install.check_command(exe, settings.device()),
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            QMessageBox.warning(self._parent(), "rasterlearn", f"{exe} could not be checked: {exc}")
            return
        if proc.returncode != 0:
            QMessageBox.warning(self._parent(), "rasterlearn", f"{exe} does not work:\n{proc.stderr[-1500:]}")
            return
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        lines = [f"executable: {exe}"] + [f"{k}: {v}" for k, v in info.items()]
        QMessageBox.information(self._parent(), "rasterlearn installation", "\n".join(lines))

    def show_settings(self) -> None:
        from .options import SettingsDialog

        SettingsDialog(self._parent()).exec()
