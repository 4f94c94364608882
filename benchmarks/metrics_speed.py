"""Caption scoring speed: fusionbench's ``score_captions`` vs the ``COCOEvalCap`` flow, same numbers.

5,000 images x 5 references of COCO-like captions; hypotheses look like a captioning model's output
(lower case, no punctuation, often generic, often close to one reference). Three implementations
score the same hypothesis sets:

* ``COCOEvalCap flow``: ``pycocoevalcap.eval.COCOEvalCap.evaluate`` without SPICE, written out:
  ``PTBTokenizer`` on references and on results, then ``Bleu(4)``, a new ``Meteor()`` (a fresh JVM,
  as ``COCOEvalCap`` starts one per evaluation), ``Rouge()``, ``Cider()``;
* ``pycocoevalcap + shared JVM``: ``fusionbench.metrics.score_captions_reference``, the same flow with
  one METEOR JVM kept for the process (fusionbench's previous scorer);
* ``fusionbench``: ``fusionbench.metrics.score_captions`` (cached references, fast BLEU/ROUGE-L/
  CIDEr-D, pipelined METEOR in parallel).

"First call" starts cold (no METEOR JVM, no remembered METEOR statistics, empty reference caches in
a fresh cache folder; the two pycocoevalcap flows start a new METEOR JVM); "repeated" scores new
hypotheses against the same references with everything warm. The implementations take turns on
each hypothesis set, so they share the machine's load; medians are reported. Every result is
compared with the ``COCOEvalCap`` flow's result for the same hypotheses, corpus and per image, for
exact (bit-for-bit) equality.

    python benchmarks/metrics_speed.py            # 5,000 images: 3 cold first calls + 3 repeated calls
    python benchmarks/metrics_speed.py --images 500 --first 1 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result  # noqa: E402

ADJ = ["", "", "", "young ", "old ", "small ", "large ", "black ", "white ", "brown ", "red ", "little "]
SUBJECTS = [
    "man", "woman", "boy", "girl", "person", "group of people", "couple", "dog", "cat", "horse",
    "giraffe", "elephant", "zebra", "bear", "bird", "surfer", "skateboarder", "tennis player",
    "baseball player", "child", "train", "bus", "truck", "motorcycle", "plate of food", "pizza",
]  # fmt: skip
VERBS = [
    "riding", "holding", "standing next to", "sitting on", "walking down", "looking at", "eating",
    "laying on", "flying over", "playing with", "throwing", "carrying", "parked in front of",
    "standing on top of", "swinging", "walking across", "grazing in", "jumping over",
]  # fmt: skip
OBJECTS = [
    "a wave", "a surfboard", "a bench", "a table", "a street", "a field", "a frisbee", "a kite",
    "the grass", "a couch", "a kitchen counter", "a building", "a tree", "the water", "a fence",
    "a plate", "a bed", "the snow", "a skateboard", "a tennis racket", "an umbrella", "a laptop",
    "a bat", "the beach", "a sidewalk", "a dirt road", "a train track", "a cake", "some broccoli",
]  # fmt: skip
PLACES = [
    "", "", "", "in a park", "on a sunny day", "near the beach", "in the city", "at night",
    "next to a building", "in a kitchen", "on the side of the road", "with trees in the background",
    "in front of a crowd", "on a cloudy day", "in a grassy field", "at the zoo", "in the snow",
]  # fmt: skip
GENERIC = [
    "a man riding a wave on top of a surfboard",
    "a man holding a tennis racket on a tennis court",
    "a group of people standing around a table",
    "a plate of food with broccoli and meat",
    "a giraffe standing in a grassy field",
    "a cat laying on top of a bed",
    "a red bus parked on the side of the road",
    "a dog sitting on a couch in a living room",
]


def _phrase(rng: random.Random) -> str:
    subject = rng.choice(SUBJECTS)
    adj = rng.choice(ADJ)
    article = "an" if (adj or subject)[0] in "aeiou" else "a"
    words = f"{article} {adj}{subject} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}"
    return " ".join(words.split())


def reference_caption(rng: random.Random) -> str:
    """COCO annotators' style: capitalised, usually a final period, sometimes a comma or 'and'."""
    text = _phrase(rng)
    if rng.random() < 0.15:
        text += f", and {_phrase(rng)}"
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    return text + rng.choice([".", ".", ".", "", " ."])


def make_references(n_images: int, n_refs: int, seed: int) -> dict[int, list[str]]:
    rng = random.Random(seed)
    ids = rng.sample(range(1, 600_000), n_images)  # COCO-like sparse ids
    return {i: [reference_caption(rng) for _ in range(n_refs)] for i in ids}


def make_hypotheses(references: dict[int, list[str]], seed: int) -> dict[int, str]:
    """A model's greedy output: lower case, no punctuation, sometimes generic, often a near copy."""
    rng = random.Random(seed)
    out = {}
    for i, refs in references.items():
        if rng.random() < 0.2:
            out[i] = rng.choice(GENERIC)
            continue
        words = rng.choice(refs).lower().replace(",", "").rstrip(" .").split()
        for _ in range(rng.randint(0, 4)):
            j = rng.randrange(len(words))
            words[j] = rng.choice(_phrase(rng).split())
        if rng.random() < 0.1:
            words = words[: max(3, len(words) - rng.randint(1, 4))]
        out[i] = " ".join(words)
    return out


# ---------------------------------------------------------------------------------------------
# The implementations
# ---------------------------------------------------------------------------------------------


def cocoevalcap_flow(predictions: dict[int, str], references: dict[int, list[str]]) -> dict[str, Any]:
    """``COCOEvalCap.evaluate`` without SPICE; returns ``{"corpus": ..., "per_image": ...}``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from fusionbench.metrics import coco

    gts = {i: [{"caption": c} for c in references[i]] for i in predictions}
    res = {i: [{"caption": predictions[i]}] for i in predictions}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize(gts)
        res = tokenizer.tokenize(res)
        meteor = Meteor()
        scorers = [
            (Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
            (meteor, "METEOR"),
            (Rouge(), "ROUGE_L"),
            (Cider(), "CIDEr"),
        ]
        corpus: dict[str, float] = {}
        per_image: dict[int, dict[str, float]] = {i: {} for i in gts}
        try:
            for scorer, method in scorers:
                score, scores = scorer.compute_score(gts, res)
                if isinstance(method, list):
                    for sc, scs, m in zip(score, scores, method):
                        corpus[m] = float(sc)
                        for i, s in zip(gts, scs):
                            per_image[i][m] = float(s)
                else:
                    corpus[method] = float(score)
                    for i, s in zip(gts, scores):
                        per_image[i][method] = float(s)
        finally:
            coco._discard_meteor(meteor)  # what COCOEvalCap leaves to garbage collection
    return {"corpus": corpus, "per_image": per_image}


def shared_jvm_reference(predictions, references) -> dict[str, Any]:
    from fusionbench.metrics import score_captions_reference

    r = score_captions_reference(predictions, references, spice=False)
    return {"corpus": r.corpus, "per_image": r.per_image}


def fusionbench_scorer(predictions, references) -> dict[str, Any]:
    from fusionbench.metrics import score_captions

    r = score_captions(predictions, references, spice=False)
    return {"corpus": r.corpus, "per_image": r.per_image}


def compare(result: dict[str, Any], expected: dict[str, Any]) -> tuple[bool, float]:
    """(bit-identical, largest absolute difference) over corpus and per-image scores."""
    same = result["corpus"] == expected["corpus"] and result["per_image"] == expected["per_image"]
    same = same and list(result["per_image"]) == list(expected["per_image"])
    diffs = [abs(result["corpus"][k] - v) for k, v in expected["corpus"].items()]
    for i, scores in expected["per_image"].items():
        diffs += [abs(result["per_image"][i][k] - v) for k, v in scores.items()]
    return same, max(diffs)


def cold() -> None:
    """No METEOR JVM, no remembered METEOR statistics, no reference sets in memory or on disk."""
    from fusionbench.metrics import clear_meteor_cache, clear_reference_cache, close_meteor

    close_meteor()
    clear_meteor_cache()
    clear_reference_cache()
    old = os.environ.get("FUSIONBENCH_CACHE", "")
    if Path(old).name.startswith(_CACHE_PREFIX):
        shutil.rmtree(old, ignore_errors=True)
    os.environ["FUSIONBENCH_CACHE"] = tempfile.mkdtemp(prefix=_CACHE_PREFIX)


_CACHE_PREFIX = "fusionbench-bench-cache-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--first", type=int, default=3, help="cold first calls per implementation")
    parser.add_argument("--repeats", type=int, default=3, help="repeated calls per implementation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-shared-jvm", action="store_true", help="leave out the middle baseline")
    parser.add_argument("--out", default="metrics_speed", help="results file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from fusionbench.metrics import close_meteor

    console = Console(width=120)
    references = make_references(args.images, args.refs, args.seed)
    calls = [make_hypotheses(references, args.seed + 1 + k) for k in range(args.first + args.repeats)]
    seen: set[tuple[int, str]] = set()
    repeated_pairs = []
    for preds in calls[args.first - 1 :]:  # the repeated calls follow the last cold call
        pairs = set(preds.items())
        repeated_pairs.append(len(pairs & seen) / len(pairs))
        seen |= pairs

    implementations = [("fusionbench", fusionbench_scorer)]
    if not args.skip_shared_jvm:
        implementations.append(("pycocoevalcap + shared JVM", shared_jvm_reference))
    implementations.append(("COCOEvalCap flow", cocoevalcap_flow))
    base = "COCOEvalCap flow"

    # Implementations take turns on every hypothesis set, so that they see the same machine load.
    times: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "repeated": []} for name, _ in implementations
    }
    checks: dict[str, list[tuple[bool, float]]] = {name: [] for name, _ in implementations}
    for k, preds in enumerate(calls):
        phase = "first" if k < args.first else "repeated"
        results = {}
        for name, fn in implementations:
            if phase == "first" and name == "fusionbench":
                cold()
            elif phase == "first" and name != base:
                close_meteor()  # a cold JVM for the shared-JVM flow too (COCOEvalCap starts its own)
            start = time.perf_counter()
            results[name] = fn(preds, references)
            times[name][phase].append(time.perf_counter() - start)
            console.print(f"{phase} call {k + 1}/{len(calls)}: {name} {times[name][phase][-1]:.2f} s")
        for name, _ in implementations:
            checks[name].append(compare(results[name], results[base]))
    cold()
    shutil.rmtree(os.environ.pop("FUSIONBENCH_CACHE"), ignore_errors=True)

    def med(name: str, phase: str) -> float:
        return statistics.median(times[name][phase])

    rows = {}
    for name, _ in implementations:
        first, rep = med(name, "first"), med(name, "repeated")
        rows[name] = {
            "first_call_s_median": first,
            "first_calls_s": times[name]["first"],
            "repeated_call_s_median": rep,
            "repeated_calls_s": times[name]["repeated"],
            "speedup_first_vs_cocoevalcap": med(base, "first") / first,
            "speedup_repeated_vs_cocoevalcap": med(base, "repeated") / rep,
            "identical_to_cocoevalcap": all(same for same, _ in checks[name]),
            "max_abs_difference": max(d for _, d in checks[name]),
        }

    table = Table(
        title=f"Caption scoring: {args.images:,} images x {args.refs} references (median of {args.first} cold "
        f"first calls and of {args.repeats} repeated calls with new hypotheses)"
    )
    for col in (
        "implementation",
        "first call s",
        "repeated s (median)",
        "first x",
        "repeated x",
        "identical",
    ):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['first_call_s_median']:.2f}",
            f"{row['repeated_call_s_median']:.2f}",
            f"{row['speedup_first_vs_cocoevalcap']:.2f}",
            f"{row['speedup_repeated_vs_cocoevalcap']:.2f}",
            "yes" if row["identical_to_cocoevalcap"] else f"NO (max diff {row['max_abs_difference']:.2e})",
        )
    console.print(table)
    fb = rows["fusionbench"]
    targets = {
        "repeated_at_least_3x_faster": fb["speedup_repeated_vs_cocoevalcap"] >= 3.0,
        "first_call_no_slower": fb["speedup_first_vs_cocoevalcap"] >= 1.0,
        "identical": fb["identical_to_cocoevalcap"],
    }
    console.print(
        "x = speed-up over the COCOEvalCap flow; identical = every corpus and per-image score equal to it, bit "
        f"for bit. (Image-hypothesis pairs already seen in earlier calls: {[f'{p:.0%}' for p in repeated_pairs]}.)"
    )
    console.print(f"targets: {targets}")
    path = write_result(
        args.out,
        {
            "benchmark": "metrics_speed",
            "images": args.images,
            "references_per_image": args.refs,
            "first_calls": args.first,
            "repeats": args.repeats,
            "seed": args.seed,
            "hypothesis_pairs_seen_before": repeated_pairs,
            "implementations": rows,
            "targets": targets,
            "machine": machine(),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        },
    )
    console.print(f"written {path}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
