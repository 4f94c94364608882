"""Peer baseline: a Hugging Face ``VisionEncoderDecoderModel`` next to our ``vit-attention-bert`` cell.

The question (issue [verdict], item 4): is our ViT encoder + attention fusion + BERT decoder cell
as good as what a user gets from the obvious off-the-shelf recipe on the same data and epochs? The
peer is what such a user would write with ``transformers`` alone, sharing nothing with fusionbench
but the data files and the scorer:

* data: the ``shapes`` splits exported once as PNG files (lossless, so the pixels are exactly the
  ones our cell trains on) and one COCO captions file per split (``--out/data``);
* model: ``VisionEncoderDecoderModel(ViTModel, BertLMHeadModel)`` built from configs (no
  download): 2 + 2 layers, width 128, 4 heads, FFN 512, 64x64 images in 8x8 patches, the BERT
  decoder with cross-attention;
* tokenizer: ``BertTokenizerFast`` over a vocabulary file written from the train captions (every
  train word is one WordPiece, so it is a word-level vocabulary);
* training: a plain PyTorch loop over shuffled (image, caption) pairs, AdamW (lr 1e-3), linear
  warmup then constant, cross-entropy with padding ignored, ``--epochs`` passes over the pairs;
* decoding: ``generate`` with beam search (``--beam-size``, as our cell's test decoding) on the
  test split; scored by ``fusionbench.metrics.score_files`` against the exported references.

Our side is the default grid's ``vit-attention-bert`` cell (``experiments/grid.yaml``, its seed
``--seed``, with the grid's batch size, learning rate (``grid.settings`` included), budget and
early stopping, the best validation epoch tested), run as the grid runs it; the peer trains the same
number of epochs (the grid's maximum, ``--epochs`` overrides) on the same train images and is
scored on the same test split. Note one difference of the two loops that matters for a fixed
number of epochs: our data module puts all five captions of an image in the same step (32 images =
160 captions a step at batch 32), the peer steps over batches of 32 pairs, so it takes 5x more
optimiser steps per epoch at that batch size. The table reports both.

Prints a rich table and writes ``benchmarks/results/peer_hf_ved.json``.

    python benchmarks/peer_hf_ved.py                                  # the default grid's cell and sizes
    python benchmarks/peer_hf_ved.py --num-train 200 --epochs 1 trainer.max_epochs=1   # quick check
    python benchmarks/peer_hf_ved.py --skip-ours                      # the peer only
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPLITS = ("train", "val", "test")


# -- data export ------------------------------------------------------------------------------------
def export_shapes(args, root: Path) -> dict[str, Path]:
    """PNG files and a COCO captions json per split; returns ``{split: captions json}``."""
    from PIL import Image

    from fusionbench.data.shapes import ShapesDataset
    from fusionbench.io import atomic_write_json

    dataset = ShapesDataset(
        ShapesDataset.Config(
            num_train=args.num_train, num_val=args.num_val, num_test=args.num_test, num_test_novel=1
        )
    )
    out = {}
    for name in SPLITS:
        split = dataset.split(name)
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for row, (image_id, caps) in enumerate(zip(split.image_ids, split.captions)):
            file_name = f"images/{name}/{image_id}.png"
            Image.fromarray(split.images[row]).save(root / file_name)
            images.append({"id": int(image_id), "file_name": file_name})
            for cap in caps:
                annotations.append({"id": len(annotations) + 1, "image_id": int(image_id), "caption": cap})
        path = root / f"captions_{name}.json"
        atomic_write_json(path, {"images": images, "annotations": annotations})
        out[name] = path
    return out


def read_coco(path: Path) -> tuple[list[dict], dict[int, list[str]]]:
    data = json.loads(path.read_text())
    refs: dict[int, list[str]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        refs[ann["image_id"]].append(ann["caption"])
    return data["images"], refs


def load_pixels(root: Path, images: list[dict]):
    """``[N, 3, H, W]`` float in [0, 1], read back from the PNG files."""
    import numpy as np
    import torch
    from PIL import Image

    arr = np.stack([np.asarray(Image.open(root / img["file_name"]).convert("RGB")) for img in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)


# -- the peer ----------------------------------------------------------------------------------------
def build_tokenizer(train_captions: list[str], folder: Path):
    """``BertTokenizerFast`` over a vocabulary of every train word (BERT's own pre-tokenisation)."""
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertTokenizerFast  # transformers 5: the tokenizers-backed BertTokenizer

    pre = BertPreTokenizer()
    counts = Counter(w for c in train_captions for w, _ in pre.pre_tokenize_str(c.lower()))
    vocab = SPECIALS + sorted(counts)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def build_peer(args, tokenizer):
    from transformers import (
        BertConfig,
        BertLMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTModel,
    )

    width, heads, ffn = args.width, args.heads, 4 * args.width
    vit = ViTConfig(
        image_size=64,
        patch_size=8,
        num_channels=3,
        hidden_size=width,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
    )
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=64,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = VisionEncoderDecoderModel(
        encoder=ViTModel(vit, add_pooling_layer=False), decoder=BertLMHeadModel(bert)
    )
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    return model


def train_peer(args, model, tokenizer, pixels, image_rows, captions, console) -> dict:
    """Plain loop over shuffled (image, caption) pairs; returns steps and seconds."""
    import torch

    pairs = list(zip(image_rows, captions))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(pairs) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = min(args.warmup_steps, total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    rng = random.Random(args.seed)
    model.train()
    start, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        rng.shuffle(pairs)
        running = 0.0
        for b in range(0, len(pairs), args.batch_size):
            batch = pairs[b : b + args.batch_size]
            enc = tokenizer(
                [c for _, c in batch],
                padding=True,
                truncation=True,
                max_length=args.max_tokens,
                return_tensors="pt",
            )
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)  # [CLS] w1 .. wn [SEP]
            out = model(
                pixel_values=pixels[[r for r, _ in batch]],
                decoder_input_ids=enc.input_ids[:, :-1],
                decoder_attention_mask=enc.attention_mask[:, :-1],
            )
            loss = torch.nn.functional.cross_entropy(
                out.logits.reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running += float(loss.detach())
            step += 1
        console.print(f"peer epoch {epoch + 1}/{args.epochs}: train loss {running / steps_per_epoch:.3f}")
    return {"steps": step, "train_seconds": time.perf_counter() - start, "pairs": len(pairs)}


def decode_peer(args, model, tokenizer, pixels, image_ids) -> dict[int, str]:
    import torch

    model.eval()
    preds: dict[int, str] = {}
    with torch.no_grad():
        for b in range(0, len(image_ids), 100):
            ids = model.generate(
                pixel_values=pixels[b : b + 100],
                num_beams=args.beam_size,
                max_length=args.max_len + 2,  # [CLS] + words + [SEP]
                decoder_start_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id,
                early_stopping=True,
            )
            for image_id, row in zip(image_ids[b : b + 100], ids):
                preds[int(image_id)] = tokenizer.decode(row, skip_special_tokens=True)
    return preds


def run_peer(args, files: dict[str, Path], console) -> dict:
    import torch

    from fusionbench.io import atomic_write_json
    from fusionbench.metrics import score_files
    from fusionbench.metrics.collapse import caption_collapse

    torch.manual_seed(args.seed)
    root = files["train"].parent
    train_images, train_refs = read_coco(files["train"])
    test_images, test_refs = read_coco(files["test"])
    train_pixels, test_pixels = load_pixels(root, train_images), load_pixels(root, test_images)
    row_of = {img["id"]: r for r, img in enumerate(train_images)}
    rows, caps = zip(*[(row_of[i], c) for i, cs in train_refs.items() for c in cs])
    tokenizer = build_tokenizer(list(caps), root)
    model = build_peer(args, tokenizer)
    info = train_peer(args, model, tokenizer, train_pixels, list(rows), list(caps), console)
    start = time.perf_counter()
    preds = decode_peer(args, model, tokenizer, test_pixels, [img["id"] for img in test_images])
    info["decode_seconds"] = time.perf_counter() - start
    pred_path = args.out / "peer_predictions_test.json"
    atomic_write_json(pred_path, [{"image_id": i, "caption": c} for i, c in preds.items()])
    scores = score_files(pred_path, files["test"], spice=False)
    collapse = caption_collapse(preds)
    return {
        "test": {k: v for k, v in scores.items() if k != "unavailable"},
        "unique_share": collapse["unique_share"],
        "examples": [preds[i] for i in list(preds)[:3]],
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(tokenizer),
        **info,
    }


# -- ours ------------------------------------------------------------------------------------------
GRID = ROOT / "experiments" / "grid.yaml"
CELL = "vit-attention-bert"


def grid_cell(args, extra: list[str] = ()):
    """The default grid's ``vit-attention-bert`` cell of seed ``--seed``, with our overrides."""
    from fusionbench.grid import load_grid

    overrides = [
        f"output_dir={args.out / 'runs'}",
        "logger.wandb.mode=disabled",
        "trainer.enable_progress_bar=false",
        *extra,
        *args.overrides,
    ]
    grid = load_grid(GRID, overrides, seeds=[args.seed])
    (cell,) = [c for c in grid.cells if c.name == f"{CELL}-s{args.seed}"]
    return cell


def grid_sizes(args) -> None:
    """Unset sizes and epochs come from the grid cell, so both sides see the same data and epochs."""
    config = grid_cell(args).config  # composing the grid once: it validates every cell
    data, trainer = config.data, config.trainer
    for name, value in (
        ("num_train", data.num_train),
        ("num_val", data.num_val),
        ("num_test", data.num_test),
        ("epochs", trainer.max_epochs),
    ):
        if getattr(args, name) is None:
            setattr(args, name, int(value))


def run_ours(args) -> dict:
    from fusionbench.grid.execute import execute_in_subprocess

    cell = grid_cell(
        args,
        [
            f"data.num_train={args.num_train}",
            f"data.num_val={args.num_val}",
            f"data.num_test={args.num_test}",
            f"decoding.beam_size={args.beam_size}",
            f"decoding.max_len={args.max_len}",
        ],
    )
    m = execute_in_subprocess(cell, resume=False)  # a fresh process, as the grid runs a cell
    collapse = (m.get("collapse") or {}).get("test") or {}
    cfg = cell.config
    epochs = int((m.get("training") or {}).get("epochs_trained") or cfg.trainer.max_epochs)
    steps = math.ceil(args.num_train / int(cfg.loader.batch_size)) * epochs
    return {
        "test": {k: m["test"][k] for k in m["test"] if k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")},
        "val_history": m.get("val_history"),
        "training": m.get("training"),
        "unique_share": collapse.get("unique_share"),
        "params": (m.get("params") or {}).get("total"),
        "steps": steps,
        "train_seconds": m["cost"]["train_seconds"],
        "cell": cell.name,
        "lr": float(cfg.optim.lr),
        "batch_size": int(cfg.loader.batch_size),
        "run_dir": str(Path(cfg.output_dir) / str(cfg.name) / cell.name),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=None, help="default: the grid cell's")
    parser.add_argument("--num-val", type=int, default=None, help="default: the grid cell's")
    parser.add_argument("--num-test", type=int, default=None, help="default: the grid cell's")
    parser.add_argument(
        "--epochs", type=int, default=None, help="peer epochs; default: the grid cell's max_epochs"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="(image, caption) pairs per peer step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32, help="peer training captions are cut here")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "peer-hf-ved")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument(
        "--no-write", action="store_true", help="do not write benchmarks/results/peer_hf_ved.json"
    )
    parser.add_argument("overrides", nargs="*", help="dotlist overrides for our cell")
    args = parser.parse_args()
    grid_sizes(args)

    import torch
    from rich.console import Console
    from rich.table import Table

    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 150)
    args.out.mkdir(parents=True, exist_ok=True)
    files = export_shapes(args, args.out / "data")
    peer = run_peer(args, files, console)
    ours = None if args.skip_ours else run_ours(args)

    table = Table(
        title=f"shapes test ({args.num_test} images; {args.num_train} train images x 5 captions, "
        f"{args.epochs} epochs, beam {args.beam_size}): scores x100"
    )
    for col in (
        "model",
        "params",
        "steps",
        "train s",
        "BLEU-4",
        "METEOR",
        "ROUGE-L",
        "CIDEr-D",
        "unique captions",
    ):
        table.add_column(col, justify="right")
    rows = [("HF VED ViT+BERT (peer)", peer)] + ([("ours vit-attention-bert", ours)] if ours else [])
    for label, r in rows:
        t = r["test"]
        table.add_row(
            label,
            f"{r['params']:,}" if r.get("params") else "-",
            str(r["steps"]),
            f"{r['train_seconds']:.0f}",
            *(f"{100 * t[k]:.1f}" for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")),
            f"{100 * r['unique_share']:.0f}%" if r.get("unique_share") is not None else "-",
        )
    console.print(table)
    if not args.no_write:
        path = write_result(
            "peer_hf_ved",
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "peer": peer,
                "ours": ours,
                "machine": machine(),
            },
        )
        console.print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
