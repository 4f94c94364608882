"""Decoding speed per decoder: greedy and beam-3, batched vs one image at a time, KV cache vs none.

Every decoder decodes through the one step interface (``fusionbench.decoding.search``). This script
measures, for each decoder (CNN encoder, attention fusion, smoke-experiment sizes, untrained
weights: speed does not depend on what was learnt), images per second for

- greedy and beam-3 search on a batch of 64 images, and one image at a time;
- beam-3 with the decoder's incremental state (LSTM state, Transformer/BERT key-value cache)
  vs recomputing the whole prefix at every step (``decoder.forward`` over all tokens so far).

Only decoding is timed: the visual context (encoder + fusion) of every batch is computed before
the clock starts, since it costs the same per image whatever the search does (the encoder alone
took 120-140 ms of a 200 ms batch of 64 at one thread, and would hide the effect measured here).
Captions are forced to exactly ``--length`` tokens (end-of-sentence is banned before then) so
every configuration does the same work. One torch thread by default: on a shared 2-core machine
multi-threaded timings swing with the other processes' load.
Targets: batched beam-3 at batch 64 >= 5x faster per image than one at a time; the cache >= 2x
faster than recomputing for 20-token captions.

    python benchmarks/decode_speed.py [--config experiments/smoke.yaml] [--length 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402


class FixedLength:
    """Wraps a model's step interface so captions run to ``length`` tokens (eos banned before)."""

    def __init__(self, model, eos_id: int, length: int, recompute: bool = False) -> None:
        self.model, self.eos_id, self.length, self.recompute = model, eos_id, length, recompute

    def start(self, ctx):
        import torch

        if self.recompute:  # no incremental state: keep the tokens and rerun the decoder over them
            return {
                "ids": torch.empty(
                    ctx.batch_size, 0, dtype=torch.long, device=next(self.model.parameters()).device
                )
            }
        return {"inner": self.model.start(ctx), "t": 0}

    def step_logprobs(self, last_ids, state, ctx):
        import torch

        if self.recompute:
            ids = torch.cat([state["ids"], last_ids.unsqueeze(1)], 1)
            hidden, _ = self.model.decoder(ids, ctx)
            logp = torch.log_softmax(self.model.logits(hidden[:, -1], ctx).float(), -1)
            new, t = {"ids": ids}, ids.shape[1]
        else:
            logp, inner = self.model.step_logprobs(last_ids, state["inner"], ctx)
            new, t = {"inner": inner, "t": state["t"] + 1}, state["t"] + 1
        if t < self.length:
            logp = logp.clone()
            logp[:, self.eos_id] = float("-inf")
        return logp, new

    def reorder(self, state, index):
        if self.recompute:
            return {"ids": state["ids"].index_select(0, index)}
        return {"inner": self.model.reorder(state["inner"], index), "t": state["t"]}


def images_per_second(model, images, *, batch: int, beam: int, length: int, recompute: bool = False) -> float:
    import torch

    from fusionbench.decoding import DecodingConfig
    from fusionbench.decoding.search import decode

    tok = model.tokenizer
    stepper = FixedLength(model, tok.eos_id, length, recompute)
    decoding = DecodingConfig(beam_size=beam, max_len=length)

    def run(ctx):
        return decode(stepper, ctx, decoding, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)

    with torch.no_grad():
        # The encoder runs before the timer: its cost per image is the same however captions are
        # decoded, and at batch 64 it would hide the decoding speed-up this measures.
        contexts = [model.context(images[i : i + batch]) for i in range(0, len(images), batch)]
        run(contexts[0])  # warm-up
        start = time.perf_counter()
        for ctx in contexts:
            out = run(ctx)
        seconds = time.perf_counter() - start
    assert out.shape[1] == length + 1  # length words + eos
    return len(images) / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "smoke.yaml"))
    parser.add_argument("--decoders", nargs="+", default=["lstm", "transformer", "bert"])
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--single-images", type=int, default=8, help="images decoded one at a time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="decode_speed")
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from fusionbench.config import load_config
    from fusionbench.model import build_model, build_tokenizer
    from fusionbench.registry import DATASETS

    torch.set_num_threads(args.threads)
    rows = []
    for decoder in args.decoders:
        cfg = load_config(args.config, [f"model.decoder.name={decoder}", "model.fusion.name=attention"])
        train = DATASETS.build(cfg.data).split("train")
        tok = build_tokenizer(
            cfg.model, [c for caps in train.captions for c in caps], int(cfg.text.min_count)
        )
        torch.manual_seed(0)
        model = build_model(cfg.model, tok).eval()
        size = int(cfg.data.get("image_size", 64))
        images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        single = images[: args.single_images]
        row = {"decoder": decoder, "params": model.parameter_counts()["total"]}
        for beam in (1, 3):
            name = "greedy" if beam == 1 else f"beam{beam}"
            row[f"{name}_batched"] = images_per_second(
                model, images, batch=args.batch, beam=beam, length=args.length
            )
            row[f"{name}_single"] = images_per_second(model, single, batch=1, beam=beam, length=args.length)
        row["beam3_no_cache"] = images_per_second(
            model, images, batch=args.batch, beam=3, length=args.length, recompute=True
        )
        row["batching_speedup_beam3"] = row["beam3_batched"] / row["beam3_single"]
        row["cache_speedup_beam3"] = row["beam3_batched"] / row["beam3_no_cache"]
        rows.append(row)

    table = Table(
        title=f"decoding images/s ({args.length}-token captions, batch {args.batch}, {args.threads} thread(s))"
    )
    for col in (
        "decoder",
        "greedy batched",
        "greedy 1-by-1",
        "beam3 batched",
        "beam3 1-by-1",
        "beam3 no cache",
        "batching x",
        "cache x",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["decoder"],
            *(
                f"{r[k]:.1f}"
                for k in (
                    "greedy_batched",
                    "greedy_single",
                    "beam3_batched",
                    "beam3_single",
                    "beam3_no_cache",
                )
            ),
            f"{r['batching_speedup_beam3']:.1f}",
            f"{r['cache_speedup_beam3']:.1f}",
        )
    Console(width=140).print(table)
    targets = {
        "batching_speedup_beam3 >= 5": all(r["batching_speedup_beam3"] >= 5 for r in rows),
        "cache_speedup_beam3 >= 2": all(r["cache_speedup_beam3"] >= 2 for r in rows),
    }
    print("targets:", targets)
    path = write_result(
        args.out,
        {
            "config": args.config,
            "length": args.length,
            "batch": args.batch,
            "threads": args.threads,
            "rows": rows,
            "targets": targets,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
