"""Writing small grid files for tests: a grid over ``tests/configs/tiny.yaml``."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).parent / "configs"


def write_grid(tmp_path: Path, grid: dict, **top) -> Path:
    """``tmp_path/grid.yaml``: base tiny.yaml, name ``g``, results under ``tmp_path/runs``, then ``top``."""
    path = tmp_path / "grid.yaml"
    body = {
        "base": str(CONFIGS / "tiny.yaml"),
        "name": "g",
        "output_dir": str(tmp_path / "runs"),
        **top,
        "grid": grid,
    }
    path.write_text(yaml.safe_dump(body))
    return path
