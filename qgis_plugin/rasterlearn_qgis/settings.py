"""The plugin's settings (QgsSettings): the rasterlearn executable and the device."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from .install import find_executable

__all__ = ["DEVICES", "device", "executable", "private_env_dir", "set_device", "set_executable"]

_PREFIX = "rasterlearn/"
DEVICES = ("auto", "cpu", "cuda", "mps")


def private_env_dir() -> Path:
    """Where "Set up rasterlearn" creates its environment: ``<profile>/rasterlearn/env``."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "rasterlearn" / "env"


def executable() -> str | None:
    """The configured executable if it exists, else ``$RASTERLEARN_EXECUTABLE``, the private env, ``PATH``."""
    configured = QgsSettings().value(_PREFIX + "executable", "", type=str) or None
    return find_executable(configured, private_env_dir())


def set_executable(path: str) -> None:
    QgsSettings().setValue(_PREFIX + "executable", path)


def device() -> str:
    value = QgsSettings().value(_PREFIX + "device", "auto", type=str) or "auto"
    return value if value.split(":")[0] in DEVICES else "auto"


def set_device(value: str) -> None:
    QgsSettings().setValue(_PREFIX + "device", value)
