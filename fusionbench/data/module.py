"""From dataset splits to batches: the Lightning data module every experiment uses.

Training iterates over images and uses every reference caption of each image in the same step
(all five COCO-style references per epoch, as usual) while the encoder runs once per image: the
batch carries ``caption_index``, the image row of each caption, and the model repeats the visual
context per caption. That is 5x fewer encoder passes than iterating over (image, caption) pairs.
Evaluation iterates over images. Captions
are encoded with the *decoder's* tokenizer, so word-level and WordPiece decoders read the same
data. Images travel as uint8 and become float ``[0, 1]`` in the batch; each encoder normalises
them itself, with the mean/std its backbone's weights were trained with (timm's pretrained config).

Image files are resized by the dataset (``image_size``, ``resize``: ``fusionbench.data.images``),
so a batch stacks same-sized images; ``Collate`` names the images when sizes still differ. Every
image file was decoded once before training (``ImageFileDataset``), so a bad file is skipped or
reported up front; a file that becomes unreadable *after* that check (replaced or truncated
while the run goes on) is, under ``on_bad_image: skip``, replaced by a grey image with a warning
and counted in ``split.meta["bad_after_check"]`` rather than crashing the epoch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from fusionbench.data.base import CaptionDataset, CaptionSplit
from fusionbench.data.images import PAD_COLOUR, BadImageError
from fusionbench.encoders.base import RawFeatures
from fusionbench.errors import DataError

log = logging.getLogger(__name__)


class CaptionImages(Dataset):
    """Every image of a split once (for decoding and scoring).

    With ``features`` (a ``fusionbench.features.store.FeatureStore``) an item carries the image's
    stored backbone features instead of its pixels.
    """

    def __init__(self, split: CaptionSplit, features=None) -> None:
        self.split = split
        self.features = features

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.features is not None:
            image_id = int(self.split.image_ids[index])
            return {"features": self.features.load(image_id), "image_id": image_id}
        return _image_item(self.split, index)


class CaptionedImages(CaptionImages):
    """Every image of a split with all its reference captions, pre-encoded."""

    def __init__(self, split: CaptionSplit, tokenizer, max_words: int, features=None) -> None:
        super().__init__(split, features)
        self.ids = [[tokenizer.encode(c, max_words) for c in caps] for caps in split.captions]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["input_ids"] = self.ids[index]
        return item


def batch_inputs(batch: dict[str, Any]):
    """What the encoder reads from a batch: ``features`` (``RawFeatures``) if present, else ``images``."""
    return batch["features"] if "features" in batch else batch["images"]


def _load(split: CaptionSplit, i: int) -> np.ndarray:
    """The image, or under ``on_bad_image: skip`` a grey stand-in for a file broken after the check."""
    try:
        return split.load_image(i)
    except BadImageError as err:
        if split.meta.get("on_bad_image") != "skip" or not split.image_size:
            raise
        late = split.meta.setdefault("bad_after_check", [])
        if str(err.path) not in late:
            late.append(str(err.path))
            log.warning(
                "%s became unreadable after the dataset was checked (%s); using a grey image for it.",
                err.path,
                err.reason,
            )
        size = int(split.image_size)
        return np.broadcast_to(np.asarray(PAD_COLOUR, dtype=np.uint8), (size, size, 3)).copy()


def _image_item(split: CaptionSplit, i: int) -> dict[str, Any]:
    item: dict[str, Any] = {"image": _load(split, i), "image_id": int(split.image_ids[i])}
    if split.boxes is not None:
        item["boxes"] = split.boxes[i]
    return item


class Collate:
    """Stack images to float ``[B, 3, H, W]`` in ``[0, 1]``; captions to right-padded ``input_ids``
    ``[C, T]`` with ``caption_index`` ``[C]`` giving each caption's image row."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if "features" in items[0]:
            batch: dict[str, Any] = {
                "features": RawFeatures.collate([it["features"] for it in items]),
                "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
                "boxes": None,
            }
            self._captions(items, batch)
            return batch
        shapes = {it["image"].shape for it in items}
        if len(shapes) > 1:
            detail = ", ".join(f"image {it['image_id']}: {it['image'].shape}" for it in items[:4])
            raise DataError(
                f"Images in one batch have different sizes ({detail}, ...). Datasets of image files "
                f"must resize them: give the dataset an image_size (CaptionSplit.image_size)."
            )
        images = (
            torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).float().div_(255.0)
        )
        batch: dict[str, Any] = {
            "images": images.contiguous(),
            "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
            "boxes": [torch.as_tensor(it["boxes"], dtype=torch.float32) for it in items]
            if "boxes" in items[0]
            else None,
        }
        self._captions(items, batch)
        return batch

    def _captions(self, items: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        if "input_ids" in items[0]:
            captions = [(row, c) for row, it in enumerate(items) for c in it["input_ids"]]
            longest = max(len(c) for _, c in captions)
            ids = torch.full((len(captions), longest), self.pad_id, dtype=torch.long)
            for n, (_, c) in enumerate(captions):
                ids[n, : len(c)] = torch.tensor(c, dtype=torch.long)
            batch["input_ids"] = ids
            batch["caption_index"] = torch.tensor([row for row, _ in captions], dtype=torch.long)


class CaptionDataModule(pl.LightningDataModule):
    """Train pairs, validation images and one test loader per evaluation split."""

    def __init__(
        self,
        dataset: CaptionDataset,
        tokenizer,
        *,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        max_words: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_words = max_words
        self.seed = seed
        self.collate = Collate(tokenizer.pad_id)
        self.eval_split_names = dataset.eval_splits()
        self.features = None  # a FeatureStore: batches then carry stored features, not pixels
        # One generator for the whole fit: it draws each epoch's shuffle (and the loader's worker
        # seeds), and its state travels in checkpoints, so a resumed run shuffles as an
        # uninterrupted one would (``state_dict``).
        self.train_generator = torch.Generator().manual_seed(seed)

    def use_features(self, store) -> None:
        """Read every split's backbone features from ``store`` instead of decoding images."""
        self.features = store

    def split(self, name: str) -> CaptionSplit:
        return self.dataset.split(name)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint by Lightning: where the training shuffle has got to."""
        return {"train_generator": self.train_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_generator" in state_dict:
            self.train_generator.set_state(state_dict["train_generator"])

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # Workers are not persistent: each epoch's loader iterator draws its worker seeds from the
        # generator (the training one, or the global RNG for evaluation) at the same point in a
        # resumed run as in an uninterrupted one; persistent workers would draw them once per fit.
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=self.train_generator if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            CaptionedImages(self.split("train"), self.tokenizer, self.max_words, self.features),
            self.batch_size,
            True,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(CaptionImages(self.split("val"), self.features), self.eval_batch_size, False)

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(CaptionImages(self.split(s), self.features), self.eval_batch_size, False)
            for s in self.eval_split_names
        ]
