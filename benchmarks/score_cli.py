"""``fusionbench score`` end to end vs a plain pycocoevalcap script, each a fresh process.

What a user waits for: a new Python process that reads a COCO results file and a COCO captions
file and prints the scores, so imports, JVM start-up and file reading all count. Two contenders
score the same files (COCO-like captions from ``metrics_speed.py``; default 400 images and 5,000
images, 5 references each):

* ``fusionbench score``: ``python -m fusionbench.cli score --predictions P --references R`` with an
  empty ``FUSIONBENCH_CACHE`` (a first call: no reference tokenisation cached on disk); and, as a
  second row, the same command again with that cache filled (``again``: the same references scored
  a second time, e.g. a new model on the same split);
* ``pycocoevalcap``: the plain ``COCOEvalCap`` flow a user would write without fusionbench
  (``PLAIN_FLOW`` below): ``json.load`` both files, ``PTBTokenizer`` on references and results,
  ``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()``.

The contenders take turns in every round (the order alternates), so they share the machine's
load; medians over ``--rounds`` are reported, and every round's corpus scores are compared (the
two must agree to 1e-12). Also timed: ``fusionbench --help`` (target < 1 s), and whether the score
process imported torch (it must not). Run it on an idle machine: timings under load say nothing.

    python benchmarks/score_cli.py                          # 400x5 and 5,000x5, 3 rounds
    python benchmarks/score_cli.py --sizes 20x5 --rounds 1 --out score_cli_tiny   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402
from metrics_speed import make_hypotheses, make_references  # noqa: E402

KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

PLAIN_FLOW = r"""
import json, sys
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

preds = json.load(open(sys.argv[1]))
refs = json.load(open(sys.argv[2]))
gts = {}
for a in refs["annotations"]:
    gts.setdefault(a["image_id"], []).append({"caption": a["caption"]})
res = {p["image_id"]: [{"caption": p["caption"]}] for p in preds}
gts = {i: gts[i] for i in res}
tokenizer = PTBTokenizer()
gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
out = {}
for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), ["METEOR"]),
                      (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
    score, _ = scorer.compute_score(gts, res)
    for name, value in zip(names, score if len(names) > 1 else [score]):
        out[name] = float(value)
print(json.dumps(out))
"""

# Run by the fusionbench contender instead of `-m fusionbench.cli`, to also report whether torch
# was imported; the command and its imports are the same as the console script's.
FUSIONBENCH_FLOW = r"""
import sys
from fusionbench.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("torch", "torchmetrics", "pytorch_lightning", "torchvision") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def write_files(folder: Path, images: int, refs: int, seed: int) -> tuple[Path, Path]:
    references = make_references(images, refs, seed)
    predictions = make_hypotheses(references, seed + 1)
    p, r = folder / f"predictions_{images}x{refs}.json", folder / f"references_{images}x{refs}.json"
    p.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in predictions.items()]))
    r.write_text(
        json.dumps(
            {
                "images": [{"id": i} for i in references],
                "annotations": [
                    {"image_id": i, "id": n, "caption": c}
                    for n, (i, c) in enumerate((i, c) for i, cs in references.items() for c in cs)
                ],
            }
        )
    )
    return p, r


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc


def scores_of(stdout: str) -> dict[str, float]:
    """The printed scores: fusionbench prints one JSON document; pycocoevalcap's BLEU prints its
    statistics first, so the plain script's JSON is its last line."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        data = json.loads(stdout.strip().splitlines()[-1])
    return {k: float(data[k]) for k in KEYS}


def run_size(images: int, refs: int, rounds: int, seed: int, folder: Path, env: dict[str, str]) -> dict:
    preds, references = write_files(folder, images, refs, seed)
    times: dict[str, list[float]] = {
        "fusionbench score": [],
        "fusionbench score again": [],
        "pycocoevalcap": [],
    }
    agree: list[float] = []
    heavy: set[str] = set()
    for k in range(rounds):
        cache = tempfile.mkdtemp(prefix="fusionbench-score-cli-", dir=folder)
        fb_env = {**env, "FUSIONBENCH_CACHE": cache}
        fb_cmd = [
            sys.executable,
            "-c",
            FUSIONBENCH_FLOW,
            "score",
            "--predictions",
            str(preds),
            "--references",
            str(references),
        ]
        plain_cmd = [sys.executable, "-c", PLAIN_FLOW, str(preds), str(references)]
        order = ["fb", "plain"] if k % 2 == 0 else ["plain", "fb"]
        results = {}
        for who in order:
            if who == "fb":
                seconds, proc = timed(fb_cmd, fb_env)
                times["fusionbench score"].append(seconds)
                results["fb"] = scores_of(proc.stdout)
                heavy |= {
                    m
                    for line in proc.stderr.splitlines()
                    if line.startswith("HEAVY=")
                    for m in line[6:].split(",")
                    if m
                }
                seconds, proc = timed(fb_cmd, fb_env)  # the reference tokenisation is now cached on disk
                times["fusionbench score again"].append(seconds)
            else:
                seconds, proc = timed(plain_cmd, env)
                times["pycocoevalcap"].append(seconds)
                results["plain"] = scores_of(proc.stdout)
        agree.append(max(abs(results["fb"][key] - results["plain"][key]) for key in KEYS))
        print(
            f"{images}x{refs} round {k + 1}/{rounds}: "
            + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in times.items()),
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "images": images,
        "references_per_image": refs,
        "seconds": times,
        "median_seconds": medians,
        "ratio_first_call": medians["fusionbench score"] / medians["pycocoevalcap"],
        "ratio_again": medians["fusionbench score again"] / medians["pycocoevalcap"],
        "max_abs_score_difference": max(agree),
        "score_process_imported": sorted(heavy),
    }


def help_seconds(rounds: int, env: dict[str, str]) -> list[float]:
    cmd = [sys.executable, "-m", "fusionbench.cli", "--help"]
    return [timed(cmd, env)[0] for _ in range(rounds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["400x5", "5000x5"], help="IMAGESxREFS, e.g. 400x5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="score_cli", help="results file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fusionbench-score-cli-") as tmp:
        for size in args.sizes:
            images, refs = (int(x) for x in size.lower().split("x"))
            rows.append(run_size(images, refs, args.rounds, args.seed, Path(tmp), env))
    helps = help_seconds(max(args.rounds, 3), env)

    table = Table(title="fusionbench score vs plain pycocoevalcap, fresh process each (median seconds)")
    for col in (
        "images x refs",
        "fusionbench score",
        "again (cached refs)",
        "pycocoevalcap",
        "ratio",
        "max |diff|",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        m = r["median_seconds"]
        table.add_row(
            f"{r['images']:,} x {r['references_per_image']}",
            f"{m['fusionbench score']:.2f}",
            f"{m['fusionbench score again']:.2f}",
            f"{m['pycocoevalcap']:.2f}",
            f"{r['ratio_first_call']:.2f}",
            f"{r['max_abs_score_difference']:.1e}",
        )
    console = Console(width=120)
    console.print(table)
    imported = sorted({m for r in rows for m in r["score_process_imported"]})
    console.print(
        f"fusionbench --help: median {statistics.median(helps):.2f}s (target < 1 s); "
        f"score process imported: {', '.join(imported) or 'no torch, torchmetrics or Lightning'}"
    )
    path = write_result(
        args.out,
        {"machine": machine(), "rounds": args.rounds, "sizes": rows, "help_seconds": helps},
    )
    console.print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
