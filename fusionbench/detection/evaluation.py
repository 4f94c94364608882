"""Detection quality with torchmetrics' ``MeanAveragePrecision`` (COCO protocol), and the table the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusionbench.detection.inference import select_boxes
from fusionbench.detection.samples import check_split, image_tensor

#: ``k`` of ``recall_iou50_top{k}``; 36 is the region count of the Bottom-Up Top-Down features.
RECALL_AT: tuple[int, ...] = (1, 10, 36, 100)


def evaluate_detector(
    model: nn.Module,
    split,
    *,
    score_threshold: float = 0.3,
    max_boxes: int = 10,
    batch_size: int = 16,
) -> dict[str, float]:
    """COCO-style detection quality of ``model`` on ``split``'s boxes, class-agnostic.

    torchmetrics' ``MeanAveragePrecision`` over all detections (torchvision keeps up to 100 per
    image): ``map_50``, ``map`` (IoU .5:.95), ``map_75`` and ``recall_iou50_top{k}`` for ``k`` in
    ``RECALL_AT``. The boxes ``regions`` would pool over (score >= ``score_threshold``, the
    ``max_boxes`` best): ``recall_iou50``, ``precision_iou50`` (matched / kept, COCO's one-to-one
    matching) and ``mean_detections`` per image. A detector trained on labels is scored as one
    "object" class, the way ``regions`` uses its boxes.
    """
    from torchmetrics.detection import MeanAveragePrecision

    check_split(split, "evaluation")
    device = next(model.parameters()).device
    # pycocotools tabulates recall at three cut-offs (the last, 100, also gives the mAP): one
    # evaluation per group of cut-offs, plus one of the boxes regions keeps.
    cutoffs = [(1, 10, 100), (1, 36, 100)]
    every = [
        MeanAveragePrecision(iou_type="bbox", max_detection_thresholds=list(c), extended_summary=True)
        for c in cutoffs
    ]
    used = MeanAveragePrecision(iou_type="bbox", extended_summary=True)
    n_gt = n_kept = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(split), batch_size):
            idx = range(start, min(start + batch_size, len(split)))
            with torch.no_grad():
                outputs = model([image_tensor(split, i).to(device) for i in idx])
            preds, kept, targets = [], [], []
            for i, out in zip(idx, outputs):
                gt = torch.as_tensor(np.asarray(split.boxes[i], dtype=np.float32)).reshape(-1, 4)
                targets.append({"boxes": gt, "labels": torch.ones(len(gt), dtype=torch.int64)})
                boxes, scores, _ = select_boxes({k: v.cpu() for k, v in out.items()})
                ones = torch.ones(len(scores), dtype=torch.int64)
                preds.append({"boxes": boxes, "scores": scores, "labels": ones})
                k = int((scores >= score_threshold).sum().clamp(max=max_boxes))
                kept.append({"boxes": boxes[:k], "scores": scores[:k], "labels": ones[:k]})
                n_gt += len(gt)
                n_kept += k
            for m in every:
                m.update(preds, targets)
            used.update(kept, targets)
    finally:
        model.train(was_training)
    results = [m.compute() for m in every]
    full = results[0]
    out = {"map_50": float(full["map_50"]), "map": float(full["map"]), "map_75": float(full["map_75"])}
    for k in RECALL_AT:
        group = next(g for g, c in enumerate(cutoffs) if k in c)
        out[f"recall_iou50_top{k}"] = _recall_iou50(results[group], cutoffs[group].index(k))
    recall_used = _recall_iou50(used.compute(), -1)
    out["recall_iou50"] = recall_used
    out["precision_iou50"] = recall_used * n_gt / n_kept if n_kept else 0.0
    out["mean_detections"] = n_kept / len(split)
    return out


def _recall_iou50(result: dict[str, Tensor], cutoff: int) -> float:
    """COCOeval's recall at IoU 0.5, all areas, cut-off index ``cutoff`` (0 without ground truth)."""
    return max(float(result["recall"][0, 0, 0, cutoff]), 0.0)


#: ``(column header, metric suffix)`` of a detection-quality table (shown x 100, as in papers).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mAP@0.5", "map_50"),
    ("mAP@[.5:.95]", "map"),
    ("R@0.5 top-1", "recall_iou50_top1"),
    ("R@0.5 top-10", "recall_iou50_top10"),
    ("R@0.5 top-36", "recall_iou50_top36"),
    ("R@0.5 top-100", "recall_iou50_top100"),
    ("kept R@0.5", "recall_iou50"),
    ("kept P@0.5", "precision_iou50"),
)


def metrics_rows(metrics: dict[str, Any], prefixes: Sequence[str] = ("val", "test")) -> list[list[str]]:
    """Rows ``[split, value x 100 per TABLE_COLUMNS..., boxes per image]`` of the evaluated splits."""
    rows = []
    for prefix in prefixes:
        if f"{prefix}_map_50" not in metrics:
            continue
        name = str(metrics.get(f"{prefix}_split", prefix))
        values = [f"{100 * float(metrics[f'{prefix}_{key}']):.1f}" for _, key in TABLE_COLUMNS]
        rows.append([name, *values, f"{float(metrics[f'{prefix}_mean_detections']):.2f}"])
    return rows


def metrics_table(metrics: dict[str, Any], title: str):
    """The detection-quality table (a rich ``Table``) that ``detector train`` and the benchmark print."""
    from rich.table import Table

    table = Table(title=title)
    for header in ["split", *(h for h, _ in TABLE_COLUMNS), "kept/image"]:
        table.add_column(header, justify="left" if header == "split" else "right")
    for row in metrics_rows(metrics):
        table.add_row(*row)
    return table
