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

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.encoders.base import Encoder
from fusionbench.features.extract import extract_features
from fusionbench.features.store import MANIFEST, FeatureStore, FeatureWriter
from fusionbench.paths import cache_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_root(cfg: DictConfig | None = None) -> Path:
    configured = cfg.features.dir if cfg is not None and cfg.get("features") else None
    return Path(str(configured)).expanduser() if configured else cache_dir() / "features"


def weights_digest(encoder: Encoder) -> str:
    """SHA-256 of the encoder's non-trainable state (names, shapes, dtypes and values)."""
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    h = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        if name in trainable:
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(encoder: Encoder, data_cfg: Any) -> dict[str, Any]:
    """Everything the cached features depend on (hashed into the cache folder's name)."""
    data = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else data_cfg
    return {
        "version": CACHE_VERSION,
        "encoder": encoder.feature_identity(),
        "weights": weights_digest(encoder),
        "data": data,
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


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
    writer = FeatureWriter(tmp)
    device = torch.device(device)
    origin = next(encoder.parameters(), torch.empty(0)).device
    encoder.to(device)
    try:
        # On a forked RNG: extracting (its data loader draws a seed) must not shift the run's RNG,
        # or a run that extracts would train differently from one that finds the cache.
        with torch.random.fork_rng(devices=[]):
            stats = extract_features(encoder, splits.values(), writer, batch_size=batch_size, device=device)
        writer.close(
            {**key, "key": digest, "dim": stats["dim"], "images": stats["images"], "splits": list(splits)}
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        encoder.to(origin)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process published the same key first: use its complete copy
        shutil.rmtree(tmp, ignore_errors=True)
    info.update(hit=False, images=int(stats["images"]), extract_seconds=float(stats["seconds"]))
    log.info("Cached %d images' encoder features in %s (%.1f s)", stats["images"], dest, stats["seconds"])
    return FeatureStore(dest), info
