"""Settings page (Settings > Options > rasterlearn) and dialog: the executable and the device."""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QVBoxLayout, QWidget

from . import settings

__all__ = ["RasterlearnOptionsFactory", "SettingsDialog"]


class _Form(QWidget):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        layout = QFormLayout(self)
        self.exe = QgsFileWidget(self)
        self.exe.setFilePath(settings.executable() or "")
        self.device = QComboBox(self)
        self.device.setEditable(True)  # cuda:1 etc.
        self.device.addItems(list(settings.DEVICES))
        self.device.setCurrentText(settings.device())
        layout.addRow("rasterlearn executable", self.exe)
        layout.addRow("Device", self.device)

    def save(self) -> None:
        settings.set_executable(self.exe.filePath())
        settings.set_device(self.device.currentText().strip() or "auto")


class RasterlearnOptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.form = _Form(self)
        layout.addWidget(self.form)
        layout.addStretch()

    def apply(self) -> None:
        self.form.save()


class RasterlearnOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("rasterlearn")

    def icon(self) -> QIcon:
        from pathlib import Path

        return QIcon(str(Path(__file__).resolve().parent / "icon.png"))

    def createWidget(self, parent: Any) -> RasterlearnOptionsPage:
        return RasterlearnOptionsPage(parent)


class SettingsDialog(QDialog):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("rasterlearn settings")
        layout = QVBoxLayout(self)
        self.form = _Form(self)
        layout.addWidget(self.form)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _ok(self) -> None:
        self.form.save()
        self.accept()
