"""All diagnostics of a tested run, per evaluation split: what ``metrics.json``'s ``diagnostics`` holds.

``run_diagnostics`` is the one call ``fusionbench.experiment`` makes (for a run and for a
re-evaluation). It reuses what testing already produced: the test predictions (decoded with the
run's test-time decoding) are the true images' captions and the input of every caption-only
diagnostic; the reported CIDEr-D is ``CIDEr_true``. The extra model work is one decode of each
split with permuted images, one blind caption, the mean visual features of ``BLIND_IMAGES`` train
images and one teacher-forced pass for the attention weights (attention fusion). The seconds it
took are recorded under ``diagnostics.seconds`` so its cost can be reported next to the run's
wall time.

Per split::

    {"visual": {CIDEr_true, CIDEr_permuted, CIDEr_blind, gap, blind_gap, blind_caption, ...},
     "diversity": {...}, "chair": {...}, "facts": {...}, "novel_pairs": {...} (test_novel),
     "grounding": {...} or {"unavailable": "n/a: ..."}}
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fusionbench.diagnostics.diversity import train_sentences
from fusionbench.diagnostics.grounding import model_grounding
from fusionbench.diagnostics.text import scenes_of_split, text_diagnostics
from fusionbench.diagnostics.visual import (
    blind_caption,
    cider_d_many,
    mean_features,
    permuted_captions,
    reliance,
)

log = logging.getLogger(__name__)

NO_INSTANCES = (
    "unavailable: CHAIR needs the objects of each image: shapes scenes, or COCO instance "
    "annotations (instances_val2014.json) given as data.instances"
)


def _instances(cfg) -> tuple[Any, str | None]:
    path = cfg.data.get("instances") if hasattr(cfg.data, "get") else None
    if not path:
        return None, NO_INSTANCES
    from fusionbench.diagnostics.coco_chair import load_instances

    return load_instances(path), None


def run_diagnostics(cfg, module, datamodule, references, scores, device) -> dict[str, Any]:
    """``{split: diagnostics, "seconds": {...}}`` of a tested ``CaptionModule``; see the module doc."""
    start = time.perf_counter()
    model = module.model
    was_training = model.training
    model.eval()
    batch_size = int(cfg.loader.eval_batch_size)
    seconds = {"visual": 0.0, "text": 0.0, "grounding": 0.0}
    out: dict[str, Any] = {}
    try:
        train_split = datamodule.split("train")
        train = train_sentences(train_split.captions)
        tick = time.perf_counter()
        blind_vis = mean_features(model, datamodule, train_split, device, batch_size)
        blind = blind_caption(model, blind_vis, module.decoding)
        seconds["visual"] += time.perf_counter() - tick
        instances = reason = None
        decoded: dict[str, tuple[dict[int, str], dict[int, str]]] = {}
        for split_name, result in module.test_results.items():
            split = datamodule.split(split_name)
            predictions = result["predictions"]
            scenes = scenes_of_split(split)
            if scenes is None and instances is None and reason is None:
                instances, reason = _instances(cfg)
            tick = time.perf_counter()
            novel = split.meta.get("novel_pairs") if split_name == "test_novel" else None
            summary, _ = text_diagnostics(
                predictions,
                references[split_name],
                scenes=scenes,
                instances=instances,
                instances_reason=reason,
                train=train,
                novel_pairs=novel,
            )
            seconds["text"] += time.perf_counter() - tick
            tick = time.perf_counter()
            permuted = permuted_captions(model, datamodule, split, module.decoding, device, batch_size)
            decoded[split_name] = (permuted, {i: blind for i in predictions})
            seconds["visual"] += time.perf_counter() - tick
            tick = time.perf_counter()
            if scenes is not None:
                grounding = model_grounding(model, datamodule, split, predictions, scenes, device, batch_size)
            else:
                grounding = {
                    "unavailable": "n/a: grounding needs object boxes named by the captions (shapes)"
                }
            seconds["grounding"] += time.perf_counter() - tick
            out[split_name] = {"visual": None, **summary, "grounding": grounding}
        tick = time.perf_counter()  # every split's permuted and blind captions scored in one PTB call
        jobs = [(references[s], captions) for s, pair in decoded.items() for captions in pair]
        found = iter(cider_d_many(jobs))
        for split_name in decoded:
            visual = reliance(float(scores[split_name]["CIDEr"]), next(found), next(found))
            out[split_name]["visual"] = {**visual, "blind_caption": blind}
        seconds["visual"] += time.perf_counter() - tick
    finally:
        model.train(was_training)
    seconds["total"] = time.perf_counter() - start
    out["seconds"] = seconds
    return out
