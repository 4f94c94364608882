"""Shared test setup: no network, caches in a temp dir, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Generated datasets go to a per-session temp dir, never the user's cache."""
    path = tmp_path_factory.mktemp("fusionbench-cache")
    old = os.environ.get("FUSIONBENCH_CACHE")
    os.environ["FUSIONBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FUSIONBENCH_CACHE", None)
    else:
        os.environ["FUSIONBENCH_CACHE"] = old


@pytest.fixture
def tiny_config() -> Path:
    return CONFIGS / "tiny.yaml"
