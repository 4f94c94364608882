"""The identity of stored features: everything that determines an encoder's ``extract`` output.

Hashed into the cache folder's name and written into every feature store's manifest, so a store
says which encoder, weights and data produced it and a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.encoders.base import Encoder

CACHE_VERSION = 1


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
