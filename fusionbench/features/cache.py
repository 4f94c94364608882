"""The frozen-encoder feature cache: compute a frozen backbone's features once, read them after.

A run whose encoder is frozen (``freeze: true``: ``Encoder.extract_is_frozen``) spends most of its
time recomputing the same backbone features every epoch, and every grid cell with the same frozen
encoder recomputes them again. With ``features.cache: true`` (the default) the first run writes
them to ``<features.dir or $FUSIONBENCH_CACHE/features>/<key>/`` and every later epoch, run and
grid cell with the same key reads them (``CaptionDataModule.use_features``).

The key is a SHA-256 over everything that determines the features: the encoder class and its
config, the backbone's weights (a digest of every non-trainable tensor of its state, so pretrained
files, random initialisations and seeds are all told apart), the normalisation it applies, and the
dataset config (which images, at what size). A stale cache is therefore never read: change any of
them and the key changes. The folder is published by one rename after its manifest is written, so
an interrupted extraction leaves nothing a later run would mistake for a cache, and two processes
extracting the same key at once both end up reading one complete copy.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fusionbench.encoders.base import Encoder
from fusionbench.features.extract import write_feature_store
from fusionbench.features.key import feature_key, key_digest
from fusionbench.features.store import MANIFEST, FeatureStore
from fusionbench.paths import cache_dir

log = logging.getLogger(__name__)


def cache_root(cfg: DictConfig | None = None) -> Path:
    configured = cfg.features.dir if cfg is not None and cfg.get("features") else None
    return Path(str(configured)).expanduser() if configured else cache_dir() / "features"


def cached_features(
    encoder: Encoder,
    data_cfg: Any,
    splits: dict[str, Any],
    root: Path,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[FeatureStore, dict[str, Any]]:
    """The store for ``encoder``'s features of ``splits``, extracted first unless already cached.

    Returns the store and what happened (``hit``, ``key``, ``path``, ``extract_seconds``, ``images``).
    """
    key = feature_key(encoder, data_cfg)
    digest = key_digest(key)
    dest = root / digest
    info: dict[str, Any] = {"key": digest, "path": str(dest)}
    ids = sorted({int(i) for split in splits.values() for i in split.image_ids})
    if (dest / MANIFEST).is_file():
        store = FeatureStore(dest)
        missing = store.missing(ids)
        if not missing:
            info.update(hit=True, images=len(ids), extract_seconds=0.0)
            log.info("Reading cached encoder features from %s", dest)
            return store, info
        log.warning("Feature cache %s lacks %d images; extracting again.", dest, len(missing))
        shutil.rmtree(dest, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        stats = write_feature_store(
            encoder, data_cfg, splits, tmp, batch_size=batch_size, device=device, key=key
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, dest)
    except OSError:  # another process published the same key first: use its complete copy
        shutil.rmtree(tmp, ignore_errors=True)
    info.update(hit=False, images=int(stats["images"]), extract_seconds=float(stats["seconds"]))
    log.info("Cached %d images' encoder features in %s (%.1f s)", stats["images"], dest, stats["seconds"])
    return FeatureStore(dest), info
