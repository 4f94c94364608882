"""A torchmetrics ``Metric`` that gathers generated captions (across processes) and scores them with coco-caption."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from fusionbench.errors import ScoreInputError
from fusionbench.metrics.coco import ScoreResult, score_captions, start_meteor
from fusionbench.metrics.ptb import prepare_references_in_background

# state name -> dtype. Hypotheses travel as one flat UTF-8 byte tensor per update() plus the byte
# length of each caption: torchmetrics concatenates list states before gathering them, so the
# lengths are what keeps caption boundaries.
_STATES: dict[str, torch.dtype] = {
    "image_ids": torch.int64,
    "hyp_lengths": torch.int64,
    "hyp_bytes": torch.uint8,
}


class CaptionMetric(Metric):
    """coco-caption scores (``Bleu_1..4, METEOR, ROUGE_L, CIDEr``) of the captions given to ``update``.

    ``references``: ``{image_id: [caption, ...]}`` of the split; kept as a plain attribute, not synced.
    ``update(image_ids, hypotheses)``: ids as a list of ints or a 1-D integer tensor, one caption each.
    ``compute()``: gathers all processes' captions, keeps the first caption of each image id (a
    ``DistributedSampler`` pads with repeats), scores them with ``score_captions`` and returns the corpus
    scores as ``{metric: float}``. The full ``ScoreResult`` and the ``{image_id: caption}`` that were
    scored are left on ``last_result`` and ``last_predictions``.

    The references are tokenised once (``prepare_references``, shared by every metric and call with
    the same references in this process, and cached on disk), so repeated ``compute()`` calls only do
    the hypothesis side. ``warm_up=True`` (default) starts that tokenisation and the METEOR JVM (about
    10 s to load its tables) in background threads at construction, while training runs.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        references: Mapping[int, Sequence[str]],
        *,
        spice_jar_dir: str | os.PathLike | None = None,
        spice: bool = True,
        warm_up: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(references, Mapping) or not references:
            raise ScoreInputError(
                "CaptionMetric(references=...) needs a non-empty dict {image_id: [caption, ...]}; got "
                f"{type(references).__name__}{' (empty)' if isinstance(references, Mapping) else ''}. "
                "Load it with fusionbench.metrics.load_references(path)."
            )
        self.references: dict[int, list[str]] = {int(k): list(v) for k, v in references.items()}
        self.spice_jar_dir = spice_jar_dir
        self.spice = spice
        self.last_result: ScoreResult | None = None
        self.last_predictions: dict[int, str] | None = None
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        if warm_up:
            start_meteor(warm=True)
            prepare_references_in_background(self.references)

    def update(self, image_ids: Sequence[int] | torch.Tensor, hypotheses: Sequence[str]) -> None:
        if isinstance(image_ids, torch.Tensor):
            if image_ids.ndim != 1 or image_ids.is_floating_point() or image_ids.is_complex():
                raise ScoreInputError(
                    f"CaptionMetric.update: image_ids must be a 1-D integer tensor, got shape {tuple(image_ids.shape)} "
                    f"dtype {image_ids.dtype}. Pass the batch's integer image ids."
                )
            ids = image_ids.detach().to(device=self.device, dtype=torch.int64)
        else:
            ids_list = list(image_ids)
            bad = [i for i in ids_list if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
            if bad:
                raise ScoreInputError(
                    f"CaptionMetric.update: image_ids must be ints, got {bad[0]!r} ({type(bad[0]).__name__}). "
                    "Pass the batch's integer image ids."
                )
            ids = torch.tensor([int(i) for i in ids_list], dtype=torch.int64, device=self.device)
        if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
            raise ScoreInputError(
                "CaptionMetric.update: hypotheses must be a list of caption strings (one per image id); got "
                f"{type(hypotheses).__name__}. Decode the generated token ids to text first."
            )
        if len(hypotheses) != ids.numel():
            raise ScoreInputError(
                f"CaptionMetric.update: {ids.numel()} image ids but {len(hypotheses)} hypotheses. "
                "Give exactly one caption per image id."
            )
        encoded = [h.encode("utf-8") for h in hypotheses]
        flat = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        self.image_ids.append(ids)
        self.hyp_lengths.append(
            torch.tensor([len(b) for b in encoded], dtype=torch.int64, device=self.device)
        )
        self.hyp_bytes.append(torch.from_numpy(flat).to(self.device))

    def _sync_dist(self, dist_sync_fn: Any = gather_all_tensors, process_group: Any | None = None) -> None:
        # torchmetrics stands in a float32 empty tensor for an empty list state (a process that got no
        # batch); give it the state's own dtype so all processes gather tensors of the same dtype.
        for name, dtype in _STATES.items():
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.empty(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)

    def _predictions(self) -> dict[int, str]:
        """``{image_id: caption}`` from the (synced) states, first caption per id, sorted by id."""
        ids = _cat(self.image_ids, torch.int64).tolist()
        lengths = _cat(self.hyp_lengths, torch.int64).tolist()
        raw = _cat(self.hyp_bytes, torch.uint8).numpy().tobytes()
        if len(ids) != len(lengths) or sum(lengths) != len(raw):
            raise RuntimeError(
                f"CaptionMetric states are inconsistent ({len(ids)} ids, {len(lengths)} lengths, "
                f"{len(raw)} bytes for {sum(lengths)} expected)."
            )
        predictions: dict[int, str] = {}
        offset = 0
        for image_id, n in zip(ids, lengths):
            if image_id not in predictions:
                predictions[image_id] = raw[offset : offset + n].decode("utf-8")
            offset += n
        # In image-id order, whatever order the processes' captions were gathered in: corpus means
        # then add up in the same order, so 2 processes score exactly like 1.
        return dict(sorted(predictions.items()))

    def compute(self) -> dict[str, float]:
        predictions = self._predictions()
        if not predictions:
            raise ScoreInputError(
                "CaptionMetric.compute: no captions were given to update(), so there is nothing to score. "
                "Call update(image_ids, hypotheses) for the evaluation batches first."
            )
        result = score_captions(
            predictions, self.references, spice_jar_dir=self.spice_jar_dir, spice=self.spice
        )
        self.last_result = result
        self.last_predictions = predictions
        return dict(result.corpus)


def _cat(state: list[torch.Tensor] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(state, list) and not state:
        return torch.empty(0, dtype=dtype)
    return dim_zero_cat(state).detach().to(device="cpu", dtype=dtype)
