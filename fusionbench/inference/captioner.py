"""``Captioner``: a trained model with its preprocessing and decoding settings; ``load`` makes one.

``load(checkpoint)`` rebuilds the model from a checkpoint written by ``fusionbench run``
(``fusionbench.checkpoint``: config, tokenizer and weights; nothing the training run read has to
exist here) and wraps it with the image preparation of ``fusionbench.inference.images``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from fusionbench.checkpoint import read_checkpoint, rebuild_model
from fusionbench.decoding import DecodingConfig
from fusionbench.errors import FusionbenchError
from fusionbench.inference.attention import AttentionCaption, token_text
from fusionbench.inference.images import ImageInputError, PreparedImage, prepare_image, training_size


class Captioner:
    """A trained ``CaptioningModel`` with its preprocessing and decoding settings.

    ``caption(images)`` returns one caption per image; ``caption_with_attention(images)`` also the
    attention of each generated token (attention fusion). Decoding defaults to the checkpoint's
    test-time settings (``decoding.beam_size``, ``max_len``, ``length_penalty``, ``no_repeat_ngram``).
    """

    def __init__(
        self,
        model,
        config: DictConfig,
        *,
        device: str | torch.device = "cpu",
        source: str | Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.source = Path(source) if source is not None else None
        self.image_size, self.resize = training_size(config)
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def to(self, device: str | torch.device) -> Captioner:
        try:
            self.device = torch.device(device)
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as err:
            raise FusionbenchError(f"Cannot use device '{device}': {err}. Use --device cpu.") from None
        return self

    @property
    def decoding(self) -> DecodingConfig:
        """The checkpoint's test-time decoding (its config's ``decoding``; the defaults where it has none)."""
        return DecodingConfig.from_cfg(self.config.get("decoding"))

    def _decoding(self, beam_size: int | None, max_len: int | None, **extra: Any) -> DecodingConfig:
        """``decoding`` with this call's overrides (None keeps the checkpoint's value)."""
        given = {"beam_size": beam_size, "max_len": max_len, **extra}
        return replace(self.decoding, **{k: v for k, v in given.items() if v is not None})

    def _prepare(self, images: Any) -> list[PreparedImage]:
        if isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor)) or not isinstance(
            images, Iterable
        ):
            images = [images]
        items: list[PreparedImage] = []
        for i, image in enumerate(images):
            items.extend(prepare_image(image, self.image_size, self.resize, index=i))
        if not items:
            raise ImageInputError("No images to caption.")
        return items

    def _batches(self, items: list[PreparedImage], boxes: Sequence | None, batch_size: int) -> Iterable:
        """Index lists of same-size images, at most ``batch_size`` each, with their boxes."""
        if boxes is not None and len(boxes) != len(items):
            raise ImageInputError(f"Got boxes for {len(boxes)} images but {len(items)} images.")
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(item.pixels.shape), []).append(i)
        for index in groups.values():
            for start in range(0, len(index), max(1, batch_size)):
                chunk = index[start : start + max(1, batch_size)]
                x = torch.stack([items[i].pixels for i in chunk]).to(self.device)
                bx = None
                if boxes is not None:
                    bx = [
                        torch.as_tensor(boxes[i], dtype=torch.float32, device=self.device).reshape(-1, 4)
                        for i in chunk
                    ]
                yield chunk, x, bx

    def _check_boxes(self, boxes: Sequence | None) -> None:
        if boxes is None and self.model.encoder.needs_boxes:
            raise ImageInputError(
                "This model's encoder pools its features over object boxes given with each image "
                "(e.g. regions with model.encoder.box_source: dataset): pass boxes=[...] per image "
                f"([K, 4] x1, y1, x2, y2 in pixels of the {self.image_size}x{self.image_size} model "
                "input). The command line cannot give boxes; use a model whose encoder needs none "
                "(cnn, vit, or regions with box_source: detector)."
            )

    @torch.no_grad()
    def caption(
        self,
        images: Any,
        beam_size: int | None = None,
        max_len: int | None = None,
        *,
        boxes: Sequence | None = None,
        batch_size: int = 16,
        length_penalty: float | None = None,
        no_repeat_ngram: int | None = None,
    ) -> list[str]:
        """One caption per image (a single image or a list; a ``[B, 3, H, W]`` tensor is B images)."""
        items = self._prepare(images)
        self._check_boxes(boxes)
        decoding = self._decoding(
            beam_size, max_len, length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram
        )
        out: list[str] = [""] * len(items)
        for chunk, x, bx in self._batches(items, boxes, batch_size):
            for i, text in zip(chunk, self.model.caption(x, bx, decoding)):
                out[i] = text
        return out

    @torch.no_grad()
    def caption_with_attention(
        self,
        images: Any,
        beam_size: int | None = None,
        max_len: int | None = None,
        *,
        boxes: Sequence | None = None,
        batch_size: int = 16,
        length_penalty: float | None = None,
        no_repeat_ngram: int | None = None,
    ) -> list[AttentionCaption]:
        """Captions (as ``caption`` gives them) with each generated token's attention weights and maps."""
        from fusionbench.tracking.media import attention_map

        items = self._prepare(images)
        self._check_boxes(boxes)
        decoding = self._decoding(
            beam_size, max_len, length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram
        )
        tok = self.tokenizer
        out: list[AttentionCaption | None] = [None] * len(items)
        for chunk, x, bx in self._batches(items, boxes, batch_size):
            ids, att, vis = self.model.generate_with_attention(x, bx, decoding)  # [B, L], [B, L, N]
            vis_boxes = vis.boxes  # region tokens have boxes, grid tokens none
            height, width = x.shape[-2:]
            for row, i in enumerate(chunk):
                seq = [int(t) for t in ids[row].tolist()]
                length = seq.index(tok.eos_id) if tok.eos_id in seq else len(seq)
                tokens = [token_text(tok, t) for t in seq[:length]]
                weights = maps = None
                if att is not None:
                    weights = att[row, :length].float().cpu().numpy()
                    rb = vis_boxes[row].cpu().numpy() if vis_boxes is not None else None
                    layers = [attention_map(w, height, width, rb) for w in weights]
                    if layers and all(m is not None for m in layers):
                        maps = np.stack(layers).astype(np.float32)
                    elif not layers:
                        maps = np.zeros((0, height, width), dtype=np.float32)
                out[i] = AttentionCaption(
                    caption=tok.decode(seq),
                    tokens=tokens,
                    weights=weights,
                    maps=maps,
                    image=items[i].display,
                    name=items[i].name,
                )
        return [o for o in out if o is not None]


def load(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> Captioner:
    """A ``Captioner`` for the checkpoint at ``checkpoint`` (``fusionbench.checkpoint``)."""
    path = Path(checkpoint).expanduser()
    model, cfg = rebuild_model(read_checkpoint(path), path)
    return Captioner(model, cfg, device=device, source=path)
