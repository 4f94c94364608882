"""Run an encoder's backbone stage (``Encoder.extract``) over a dataset's images and store the result.

Used by ``fusionbench extract-features`` and by the frozen-encoder feature cache. The encoder runs
in eval mode without gradients, on the images exactly as training would feed them (the dataset's
resizing, the encoder's own normalisation), so a model reading these features computes what it
would have computed from the pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fusionbench.data.base import CaptionSplit
from fusionbench.data.module import CaptionImages, Collate
from fusionbench.encoders.base import Encoder
from fusionbench.features.key import feature_key, key_digest
from fusionbench.features.store import FeatureWriter


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    splits: Iterable[CaptionSplit],
    writer: FeatureWriter,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float | int]:
    """Write ``extract``'s per-image features of every image of ``splits`` (each image once).

    Returns the number of images, the feature width and the seconds it took.
    """
    start = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    done: set[int] = set()
    dim = 0
    try:
        for split in splits:
            loader = DataLoader(
                CaptionImages(split),
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                collate_fn=Collate(pad_id=0),
            )
            for batch in loader:
                boxes = [b.to(device) for b in batch["boxes"]] if batch["boxes"] is not None else None
                raw = encoder.extract(batch["images"].to(device), boxes)
                for image_id, item in zip(batch["image_ids"].tolist(), raw.per_image()):
                    if image_id in done:
                        continue
                    writer.write(image_id, item)
                    done.add(image_id)
                    dim = int(item["features"].shape[1])
                if on_batch is not None:
                    on_batch(len(batch["image_ids"]))
    finally:
        encoder.train(was_training)
    return {"images": len(done), "dim": dim, "seconds": time.perf_counter() - start}


def write_feature_store(
    encoder: Encoder,
    data_cfg: Any,
    splits: Mapping[str, CaptionSplit],
    path: str | Path,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    key: dict[str, Any] | None = None,
) -> dict[str, float | int]:
    """Extract ``splits`` into a new store at ``path`` (folder or ``.h5``) with its manifest.

    ``key``: the encoder's ``feature_key`` when the caller already computed it (it hashes the weights).

    Runs on a forked RNG (the data loader draws a seed), so a run that extracts trains exactly like
    one that finds the cache; the encoder goes back to its device afterwards. An interrupted write
    leaves no HDF5 file behind (a folder keeps only complete per-image files and no manifest).
    """
    writer = FeatureWriter(path)
    device = torch.device(device)
    origin = next(encoder.parameters(), torch.empty(0)).device
    encoder.to(device)
    try:
        with torch.random.fork_rng(devices=[]):
            stats = extract_features(encoder, splits.values(), writer, batch_size=batch_size, device=device)
    except BaseException:
        writer.abort()
        raise
    finally:
        encoder.to(origin)
    key = key if key is not None else feature_key(encoder, data_cfg)
    writer.close(
        {
            **key,
            "key": key_digest(key),
            "dim": stats["dim"],
            "images": stats["images"],
            "splits": list(splits),
        }
    )
    return stats
