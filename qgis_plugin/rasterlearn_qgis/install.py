"""Finding and setting up the rasterlearn CLI for the plugin (pure Python, no QGIS).

The plugin never imports torch or rasterlearn: it runs the ``rasterlearn`` executable of a separate
environment. :func:`find_executable` looks, in order, at the configured path, ``$RASTERLEARN_EXECUTABLE``,
the private environment made by "Set up rasterlearn", and ``PATH``. :func:`setup_commands` lists the
commands that create that private environment with uv (CPU or CUDA PyTorch wheels chosen by whether
``nvidia-smi`` finds a GPU); they are shown to the user before they run and never touch QGIS' own Python.
Proxies are honoured through the standard ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` variables, which uv reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "DEFAULT_SPEC",
    "check_command",
    "detect_cuda",
    "env_executable",
    "env_python",
    "find_executable",
    "setup_commands",
    "torch_index",
]

DEFAULT_SPEC = "rasterlearn"
_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"
_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def env_executable(env_dir: str | Path) -> Path:
    """The ``rasterlearn`` script inside a virtual environment folder."""
    env_dir = Path(env_dir)
    if sys.platform == "win32":  # pragma: no cover - Windows
        return env_dir / "Scripts" / "rasterlearn.exe"
    return env_dir / "bin" / "rasterlearn"


def find_executable(configured: str | None = None, private_env: str | Path | None = None) -> str | None:
    """The rasterlearn executable to run, or ``None`` when none is found."""
    candidates = [configured, os.environ.get("RASTERLEARN_EXECUTABLE")]
    if private_env:
        candidates.append(str(env_executable(private_env)))
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which("rasterlearn")


def detect_cuda(timeout_s: float = 10.0) -> str | None:
    """The GPU name(s) ``nvidia-smi`` reports, or ``None`` (no NVIDIA driver/GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [s.strip() for s in out.stdout.splitlines() if s.strip()]
    return ", ".join(names) if out.returncode == 0 and names else None


def torch_index(cuda: bool) -> str:
    """The PyTorch wheel index for CUDA or CPU-only wheels."""
    return _CUDA_INDEX if cuda else _CPU_INDEX


def setup_commands(uv: str, env_dir: str | Path, *, cuda: bool, spec: str = DEFAULT_SPEC) -> list[list[str]]:
    """The commands that create the private environment ``env_dir`` and install ``spec`` into it.

    PyTorch comes from its CPU or CUDA wheel index, everything else from PyPI. Each command is an argument
    list (no shell).
    """
    env_dir = str(env_dir)
    py = str(Path(env_dir) / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))
    return [
        [uv, "venv", "--python", "3.12", "--seed", env_dir],
        [uv, "pip", "install", "--python", py, "--index-url", torch_index(cuda), "torch", "torchvision"],
        [uv, "pip", "install", "--python", py, spec],
    ]


_CHECK_SNIPPET = """
import json, sys, time
import torch, rasterlearn
from rasterlearn.models import tiny_model
dev = sys.argv[1]
if dev == "auto":
    dev = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
net = tiny_model("unet", 3, 2).to(dev).eval()
t0 = time.perf_counter()
with torch.inference_mode():
    y = torch.softmax(net(torch.rand(1, 3, 64, 64, device=dev)), 1)
ok = bool(torch.allclose(y.sum(1), torch.ones(1, 64, 64, device=dev), atol=1e-4))
print(json.dumps({"rasterlearn": rasterlearn.__version__, "torch": torch.__version__,
                  "python": sys.version.split()[0], "cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "device": dev, "smoke_window_ok": ok, "smoke_seconds": round(time.perf_counter() - t0, 3)}))
"""


def env_python(executable: str | Path) -> Path:
    """The Python interpreter beside a ``rasterlearn`` script (same environment)."""
    exe = Path(executable)
    return exe.parent / ("python.exe" if sys.platform == "win32" else "python")


def check_command(executable: str | Path, device: str = "auto") -> list[str]:
    """A command printing one JSON line: versions, the device, and a one-window smoke run of a tiny U-Net."""
    return [str(env_python(executable)), "-c", _CHECK_SNIPPET, device]
