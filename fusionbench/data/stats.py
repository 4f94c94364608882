"""Dataset statistics (``fusionbench data stats <config>``) and the data report of a run.

``dataset_stats`` describes a dataset before anyone trains on it: per split the images and
captions, captions per image, caption length in words (after the same normalisation the word
tokenizer uses, ``fusionbench.text.normalize_caption``: lower-case, punctuation stripped) with a
histogram, the vocabulary, and what had to be left out (missing and corrupt files, images without
captions, empty captions) with the first examples. Missing and corrupt files are *counted* here
even when the config says ``on_missing: error`` / ``on_bad_image: error`` (the dataset is loaded
leniently), so one command shows every problem at once. ``format_stats`` renders it for a
terminal; the dict itself is JSON-ready.

``data_report`` is the compact part a run stores in ``metrics.json``: per split the images used
and the skip counts of ``split.meta["skipped"]``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fusionbench.data.base import SKIP_REASONS, CaptionDataset, CaptionSplit, ImageFileDataset
from fusionbench.text import normalize_caption

#: Caption length histogram buckets, in words: (low, high) inclusive, None = open-ended.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (0, 4),
    (5, 9),
    (10, 14),
    (15, 19),
    (20, 24),
    (25, 29),
    (30, None),
)
#: Words seen at least this often in train form the "frequent" vocabulary (a common cut-off).
FREQUENT_MIN_COUNT = 5


def _bucket_name(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": int(min(values)), "mean": float(np.mean(values)), "max": int(max(values))}


def _length_stats(lengths: list[int]) -> dict[str, Any]:
    hist = {_bucket_name(lo, hi): 0 for lo, hi in LENGTH_BUCKETS}
    for n in lengths:
        for lo, hi in LENGTH_BUCKETS:
            if n >= lo and (hi is None or n <= hi):
                hist[_bucket_name(lo, hi)] += 1
                break
    if not lengths:
        return {"min": 0, "mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0, "histogram": hist}
    arr = np.asarray(lengths)
    return {
        "min": int(arr.min()),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "histogram": hist,
    }


def _split_stats(split: CaptionSplit, train_vocab: set[str] | None) -> tuple[dict[str, Any], Counter]:
    words: Counter = Counter()
    lengths: list[int] = []
    for caps in split.captions:
        for c in caps:
            tokens = normalize_caption(c)
            lengths.append(len(tokens))
            words.update(tokens)
    skipped = {**dict.fromkeys(SKIP_REASONS, 0), **split.meta.get("skipped", {})}
    out: dict[str, Any] = {
        "images": len(split),
        "captions": sum(len(c) for c in split.captions),
        "captions_per_image": _summary([len(c) for c in split.captions]),
        "caption_length": _length_stats(lengths),
        "vocabulary": len(words),
        **skipped,
        "examples": {k: v for k, v in split.meta.get("skipped_examples", {}).items() if v},
    }
    if train_vocab is not None:
        total = sum(words.values())
        unseen = sum(n for w, n in words.items() if w not in train_vocab)
        out["oov_rate"] = unseen / total if total else 0.0
    return out, words


def dataset_stats(dataset: CaptionDataset, splits: list[str] | None = None) -> dict[str, Any]:
    """Statistics of every split (or ``splits``) of ``dataset``, as a JSON-ready dict.

    Returns ``{"dataset", "splits": {name: {images, captions, captions_per_image{min,mean,max},
    caption_length{min,mean,median,p95,max,histogram}, vocabulary, oov_rate (not train),
    missing_images, bad_images, no_captions, empty_captions, examples}}, "vocabulary": {train,
    train_frequent, frequent_min_count}, "problems": {reason: {count, examples}},
    "totals": {missing_images, bad_images, no_captions, empty_captions}}``.
    Image-file datasets are loaded leniently: missing/corrupt files are counted, not raised.
    """
    if isinstance(dataset, ImageFileDataset):
        dataset = dataset.lenient()
    names = list(splits) if splits is not None else dataset.splits()
    if "train" in names:  # train first: the vocabulary the others are compared with
        names = ["train", *[n for n in names if n != "train"]]
    train_words: Counter | None = None
    per_split: dict[str, Any] = {}
    for name in names:
        split = dataset.split(name)
        stats, words = _split_stats(split, set(train_words) if train_words is not None else None)
        if name == "train":
            train_words = words
        per_split[name] = stats
    problems: dict[str, Any] = {}
    if isinstance(dataset, ImageFileDataset):
        log = dataset.problems
        for reason, count in log.counts.get("all", {}).items():
            problems[reason] = {"count": count, "examples": log.examples.get("all", {}).get(reason, [])}
    name = getattr(dataset, "dataset_name", None) or type(dataset).__name__
    return {
        "dataset": name,
        "splits": per_split,
        "vocabulary": {
            "train": len(train_words) if train_words is not None else None,
            "train_frequent": (
                sum(1 for n in train_words.values() if n >= FREQUENT_MIN_COUNT)
                if train_words is not None
                else None
            ),
            "frequent_min_count": FREQUENT_MIN_COUNT,
        },
        "problems": problems,
        "totals": {r: sum(s[r] for s in per_split.values()) for r in SKIP_REASONS},
    }


def data_report(dataset: CaptionDataset, splits: list[str] | None = None) -> dict[str, Any]:
    """What a run used and left out, for ``metrics.json``: ``{split: {images, **skipped}}``.

    Reads the splits already loaded by the run (no lenient reload): ``images`` is the number of
    images used, the other keys are ``split.meta["skipped"]`` (``missing_images``, ``bad_images``,
    ``no_captions``, ``empty_captions``; zeros for datasets that skip nothing, e.g. ``shapes``).
    """
    names = list(splits) if splits is not None else dataset.splits()
    out: dict[str, Any] = {}
    for name in names:
        split = dataset.split(name)
        out[name] = {
            "images": len(split),
            **{**dict.fromkeys(SKIP_REASONS, 0), **split.meta.get("skipped", {})},
        }
    return out


#: Splits per table in ``format_stats``: with the statistics as rows, four splits and the row
#: labels fit an 80-column terminal; more splits continue in another table.
SPLITS_PER_TABLE = 4


def _split_columns(title: str, names: list[str]):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", overflow="fold")
    return table


def format_stats(stats: dict[str, Any]):
    """A rich renderable (tables and notes) of ``dataset_stats``' output, for ``console.print``.

    Statistics are rows and splits are columns (at most ``SPLITS_PER_TABLE`` per table), so the
    labels are written out in full and the tables read in an 80-column terminal.
    """
    from rich.console import Group
    from rich.text import Text

    splits = stats["splits"]
    names = list(splits)
    rows: list[tuple[str, Any]] = [
        ("images", lambda s: f"{s['images']:,}"),
        ("captions", lambda s: f"{s['captions']:,}"),
        ("captions/image min/mean/max", lambda s: "{min}/{mean:.1f}/{max}".format(**s["captions_per_image"])),
        ("words/caption: mean", lambda s: f"{s['caption_length']['mean']:.1f}"),
        ("words/caption: min", lambda s: f"{s['caption_length']['min']}"),
        ("words/caption: median", lambda s: f"{s['caption_length']['median']:g}"),
        ("words/caption: 95th pct", lambda s: f"{s['caption_length']['p95']:g}"),
        ("words/caption: max", lambda s: f"{s['caption_length']['max']}"),
        ("vocabulary (words)", lambda s: f"{s['vocabulary']:,}"),
        ("OOV (words unseen in train)", lambda s: f"{100 * s['oov_rate']:.1f}%" if "oov_rate" in s else "-"),
        ("missing images", lambda s: str(s["missing_images"])),
        ("corrupt images", lambda s: str(s["bad_images"])),
        ("images without captions", lambda s: str(s["no_captions"])),
        ("empty captions", lambda s: str(s["empty_captions"])),
    ]
    buckets = [_bucket_name(lo, hi) for lo, hi in LENGTH_BUCKETS]
    parts: list[Any] = []
    for first in range(0, max(len(names), 1), SPLITS_PER_TABLE):
        chunk = names[first : first + SPLITS_PER_TABLE]
        table = _split_columns(f"dataset {stats['dataset']}" if first == 0 else "", chunk)
        for label, cell in rows:
            table.add_row(label, *(cell(splits[n]) for n in chunk))
        parts.append(table)
    for first in range(0, max(len(names), 1), SPLITS_PER_TABLE):
        chunk = names[first : first + SPLITS_PER_TABLE]
        hist = _split_columns("captions per caption length (words)" if first == 0 else "", chunk)
        for b in buckets:
            hist.add_row(
                f"{b} words", *(f"{splits[n]['caption_length']['histogram'].get(b, 0):,}" for n in chunk)
            )
        parts.append(hist)
    vocab = stats["vocabulary"]
    if vocab.get("train") is not None:
        parts.append(
            Text(
                f"train vocabulary: {vocab['train']:,} words ({vocab['train_frequent']:,} seen "
                f">= {vocab['frequent_min_count']} times); OOV = share of a split's words unseen in train. "
                f"Words are lower-cased, punctuation stripped."
            )
        )
    labels = {
        "missing_images": "missing",
        "bad_images": "corrupt",
        "no_captions": "without captions",
        "empty_captions": "empty captions",
    }
    for name, s in splits.items():
        for reason, examples in s.get("examples", {}).items():
            shown = "; ".join(examples[:10])
            parts.append(
                Text(f"{name}: {s.get(reason, len(examples))} {labels.get(reason, reason)}, e.g. {shown}")
            )
    for reason, p in stats.get("problems", {}).items():
        shown = "; ".join(p["examples"][:10])
        parts.append(Text(f"{reason.replace('_', ' ')}: {p['count']}, e.g. {shown}"))
    return Group(*parts)
