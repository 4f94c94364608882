"""Where fusionbench keeps generated data and caches.

``FUSIONBENCH_CACHE`` overrides the default (``~/.cache/fusionbench``); tests point it at a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root folder for cached datasets and features (created on demand)."""
    root = os.environ.get("FUSIONBENCH_CACHE") or Path.home() / ".cache" / "fusionbench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
