"""Shared bits of the benchmark scripts: machine description and atomic result files."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they are only comparable on the same machine and load)."""
    import torch

    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20).stderr
        java = java.splitlines()[0] if java else None
    except (OSError, subprocess.TimeoutExpired):
        java = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "java": java,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json``, written atomically."""
    from fusionbench.io import atomic_write_json

    path = RESULTS / f"{name}.json"
    atomic_write_json(path, data)
    return path
