"""``fusionbench caption``: its arguments and what it prints.

Imports nothing heavy until it runs (``add_caption_arguments`` is cheap), so the command's
``--help`` needs no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusionbench.inference.attention import ATTENTION_WORDS


def add_caption_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fusionbench caption``."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to caption")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="a run's checkpoints/best.ckpt (carries config and vocabulary)",
    )
    parser.add_argument(
        "--beam",
        type=int,
        default=None,
        metavar="N",
        help="beam size (default: the checkpoint's decoding.beam_size)",
    )
    parser.add_argument(
        "--max-len",
        type=int,
        default=None,
        metavar="N",
        help="longest caption in tokens (default: decoding.max_len)",
    )
    parser.add_argument(
        "--json", action="store_true", help='print a JSON list of {"image", "caption"[, "attention"]}'
    )
    parser.add_argument(
        "--attention-out",
        default=None,
        metavar="DIR",
        help="write attention heatmap overlays DIR/<image-stem>_<t>_<word>.png (attention fusion)",
    )
    parser.add_argument(
        "--attention-words",
        type=int,
        default=ATTENTION_WORDS,
        metavar="N",
        help=f"overlays for the first N words (default {ATTENTION_WORDS})",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="images per forward pass (default 16)"
    )
    return parser


def _stems(paths: Sequence[str]) -> list[str]:
    stems = [Path(p).stem or "image" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        if stems.count(stem) > 1:
            seen[stem] = seen.get(stem, 0) + 1
            stem = f"{stem}-{seen[stem]}"
        out.append(stem)
    return out


def caption_main(args: argparse.Namespace) -> int:
    """``fusionbench caption``: one ``path<TAB>caption`` line per image, or JSON with ``--json``."""
    from fusionbench.inference.captioner import load

    captioner = load(args.checkpoint, device=getattr(args, "device", "cpu") or "cpu")
    images = list(args.images)
    batch_size = int(getattr(args, "batch_size", 16) or 16)
    records: list[dict[str, Any]] = []
    if getattr(args, "attention_out", None):
        results = captioner.caption_with_attention(images, args.beam, args.max_len, batch_size=batch_size)
        words = int(getattr(args, "attention_words", ATTENTION_WORDS))
        missing = [r.name for r in results if r.maps is None]
        if missing:
            fusion = captioner.config.model.fusion.get("name")
            print(
                f"fusionbench caption: no attention maps (fusion '{fusion}' gives the decoder no attention "
                f"over visual tokens, or the decoder does not report it): nothing written to {args.attention_out}.",
                file=sys.stderr,
            )
        for result, stem in zip(results, _stems(images)):
            files = result.save_overlays(args.attention_out, stem, words)
            records.append(
                {"image": result.name, "caption": result.caption, "attention": [str(f) for f in files]}
            )
    else:
        captions = captioner.caption(images, args.beam, args.max_len, batch_size=batch_size)
        records = [{"image": str(p), "caption": c} for p, c in zip(images, captions)]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            print(f"{record['image']}\t{record['caption']}")
    return 0
