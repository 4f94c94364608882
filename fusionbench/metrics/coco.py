"""Caption metrics computed exactly as coco-caption's ``COCOEvalCap`` computes them.

The flow is ``pycocoevalcap.eval.COCOEvalCap.evaluate`` step for step: build ``{id: [{"caption": c}]}``
for references (gts) and predictions (res), run ``PTBTokenizer().tokenize`` on each, then the
pycocoevalcap scorers ``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()`` (and ``Spice()`` when its
Stanford CoreNLP jars are present). The scorers are the reference implementation; nothing is
re-implemented, so the numbers are coco-caption's numbers on coco-caption's raw scale (BLEU 0-1,
CIDEr roughly 0-10).

Two deviations, both only where coco-caption itself would silently mis-pair captions and images:

* Characters that Java's PTBTokenizer treats as a line break (``\\r``, ``\\x0b``, ``\\x0c``, ``\\x00``,
  ``\\u2028``, ...) are replaced by a space before tokenization, as coco-caption already does for
  ``\\n``. Otherwise one caption becomes two lines and every later caption shifts to the wrong image.
* The number of tokenized captions is checked against the number sent; a mismatch raises instead of
  scoring mis-aligned captions.

METEOR runs in a JVM that takes seconds to start, so one ``Meteor`` instance is kept per process,
created on first use and reused (restarted when its process has died).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import numbers
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fusionbench.errors import MetricUnavailableError, ScoreInputError

METRIC_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

SPICE_CORENLP_JARS: tuple[str, ...] = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")

# Characters Python's str.splitlines() splits on, plus NUL; Java's PTBTokenizer (-preserveLines)
# starts a new line at several of them, which would shift every later caption to the wrong image.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00]")

_MAX_LISTED = 5


@dataclass
class ScoreResult:
    """Scores of one set of predictions.

    ``corpus``: metric -> corpus-level score (``COCOEvalCap.eval``).
    ``per_image``: image id -> metric -> score (``COCOEvalCap.imgToEval`` without the ``image_id`` key).
    ``unavailable``: metric -> why it was not computed and how to make it available.
    """

    corpus: dict[str, float]
    per_image: dict[int, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: the corpus scores at top level plus ``"unavailable": {metric: reason}``."""
        out: dict[str, Any] = {k: float(v) for k, v in self.corpus.items()}
        out["unavailable"] = dict(self.unavailable)
        return out


# ---------------------------------------------------------------------------------------------
# Java
# ---------------------------------------------------------------------------------------------

_JAVA_OK: dict[str, int] = {}  # resolved java path -> major version, once checked
_JAVA_LOCK = threading.Lock()
_JAVA_FIX = (
    "METEOR and the PTB tokenizer of coco-caption run on Java 8 or newer. Install a JRE "
    "(e.g. `apt-get install default-jre-headless`, or `conda install -c conda-forge openjdk`) and make "
    "sure `java` is on PATH for this process."
)


def _java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_101"`` -> 8, ``"17.0.15"`` -> 17)."""
    m = re.search(r'version\s+"([^"]+)"', version_output)
    if not m:
        return None
    parts = re.findall(r"\d+", m.group(1))
    if not parts:
        return None
    major = int(parts[0])
    if major == 1 and len(parts) > 1:
        major = int(parts[1])
    return major


def check_java(timeout: float = 20.0) -> int:
    """Check that ``java`` (>= 8) is on PATH; return its major version.

    Raises ``MetricUnavailableError`` with a fix when java is missing, does not answer within
    ``timeout`` seconds, or is older than Java 8. A successful check is cached per java path.
    """
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailableError(
            f"`java` was not found on PATH (PATH={os.environ.get('PATH', '')!r}). {_JAVA_FIX}"
        )
    with _JAVA_LOCK:
        if java in _JAVA_OK:
            return _JAVA_OK[java]
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise MetricUnavailableError(
            f"`{java} -version` did not answer within {timeout:.0f} s. Check that this Java installation works "
            f"(run `java -version` in a shell). {_JAVA_FIX}"
        ) from e
    except OSError as e:
        raise MetricUnavailableError(f"`{java}` could not be run ({e}). {_JAVA_FIX}") from e
    text = (proc.stderr or "") + (proc.stdout or "")
    major = _java_major(text)
    if proc.returncode != 0 or major is None:
        raise MetricUnavailableError(
            f"`{java} -version` failed (exit status {proc.returncode}): {text.strip()[:300]!r}. {_JAVA_FIX}"
        )
    if major < 8:
        raise MetricUnavailableError(
            f"`{java}` is Java {major}, older than the Java 8 that is needed. {_JAVA_FIX}"
        )
    with _JAVA_LOCK:
        _JAVA_OK[java] = major
    return major


# ---------------------------------------------------------------------------------------------
# METEOR: one long-lived JVM per process
# ---------------------------------------------------------------------------------------------

_METEOR = None  # pycocoevalcap.meteor.meteor.Meteor, created lazily
_METEOR_LOCK = threading.Lock()


def _meteor_alive(meteor) -> bool:
    return meteor is not None and meteor.meteor_p.poll() is None


def _discard_meteor(meteor) -> None:
    """Stop a Meteor instance's JVM. Safe on a dead or wedged instance."""
    # A compute_score that failed half-way leaves Meteor.lock acquired; Meteor.__del__ acquires it,
    # so give the instance a fresh lock or garbage collection would deadlock.
    meteor.lock = threading.Lock()
    proc = meteor.meteor_p
    with contextlib.suppress(Exception):
        proc.stdin.close()
    with contextlib.suppress(Exception):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        with contextlib.suppress(Exception):
            stream.close()


def _get_meteor():
    """The process-wide Meteor instance, (re)started when missing or dead. Call with _METEOR_LOCK held."""
    global _METEOR
    if _meteor_alive(_METEOR):
        return _METEOR
    if _METEOR is not None:
        _discard_meteor(_METEOR)
        _METEOR = None
    from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor

    jar = os.path.join(os.path.dirname(os.path.abspath(_meteor_module_file())), METEOR_JAR)
    if not os.path.isfile(jar):
        raise MetricUnavailableError(
            f"METEOR jar not found at {jar}. Reinstall pycocoevalcap (`pip install --force-reinstall pycocoevalcap`)."
        )
    _METEOR = Meteor()
    return _METEOR


def _meteor_module_file() -> str:
    from pycocoevalcap.meteor import meteor

    return meteor.__file__


def meteor_process():
    """The ``subprocess.Popen`` of the shared METEOR JVM, or None if it is not running."""
    with _METEOR_LOCK:
        return _METEOR.meteor_p if _meteor_alive(_METEOR) else None


def close_meteor() -> None:
    """Stop the shared METEOR JVM (it is restarted on the next scoring call). Also runs at exit."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is not None:
            _discard_meteor(_METEOR)
            _METEOR = None


atexit.register(close_meteor)


def _meteor_score(gts: dict, res: dict) -> tuple[float, list[float]]:
    """``Meteor().compute_score(gts, res)`` on the shared JVM; one retry on a fresh JVM if it died."""
    global _METEOR
    with _METEOR_LOCK:
        last_error: BaseException | None = None
        for _attempt in range(2):
            meteor = _get_meteor()
            try:
                return meteor.compute_score(gts, res)
            except (OSError, ValueError) as e:  # BrokenPipeError, or an empty/garbled line from a dead JVM
                last_error = e
                stderr = ""
                if meteor.meteor_p.poll() is not None:
                    with contextlib.suppress(Exception):
                        stderr = meteor.meteor_p.stderr.read().decode("utf-8", "replace")[-500:]
                _discard_meteor(meteor)
                _METEOR = None
                if stderr:
                    last_error = RuntimeError(f"{e}; METEOR stderr: {stderr.strip()}")
        raise MetricUnavailableError(
            f"The METEOR JVM failed twice in a row ({last_error}). It needs about 2 GB of memory (-Xmx2G) and a "
            f"working Java; check `java -jar {os.path.join(os.path.dirname(_meteor_module_file()), 'meteor-1.5.jar')}` "
            "runs in a shell."
        )


# ---------------------------------------------------------------------------------------------
# SPICE: only when its Stanford CoreNLP jars are present; never downloads
# ---------------------------------------------------------------------------------------------


def _spice_dir() -> str:
    from pycocoevalcap.spice import spice

    return os.path.dirname(os.path.abspath(spice.__file__))


def _spice_unavailable_reason(jar_dir: str, given: bool) -> str | None:
    missing = [j for j in SPICE_CORENLP_JARS if not os.path.isfile(os.path.join(jar_dir, j))]
    if not missing:
        return None
    default_lib = os.path.join(_spice_dir(), "lib")
    where = f"spice_jar_dir={jar_dir!r}" if given else f"pycocoevalcap's SPICE lib folder {jar_dir!r}"
    return (
        f"SPICE needs Stanford CoreNLP 3.6.0; {', '.join(missing)} not found in {where}. "
        "To enable SPICE, download stanford-corenlp-full-2015-12-09.zip from https://nlp.stanford.edu/software/ "
        f"on a machine with network access, and copy {' and '.join(SPICE_CORENLP_JARS)} from it into "
        f"{default_lib} (or into a folder passed as spice_jar_dir). SPICE also needs about 8 GB of memory."
    )


def _spice_from_dir(gts: dict, res: dict, jar_dir: str) -> tuple[float, list[dict]]:
    """``Spice().compute_score`` with the CoreNLP jars taken from ``jar_dir`` (same command otherwise)."""
    import numpy as np
    from pycocoevalcap.spice.spice import CACHE_DIR, SPICE_JAR, Spice

    assert sorted(gts.keys()) == sorted(res.keys())
    img_ids = sorted(gts.keys())
    input_data = [{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in img_ids]
    spice_dir = _spice_dir()
    cache_dir = os.path.join(jar_dir, CACHE_DIR)  # SPICE's parse cache, next to the given jars
    os.makedirs(cache_dir, exist_ok=True)
    classpath = os.pathsep.join(
        [os.path.join(spice_dir, SPICE_JAR)] + [os.path.join(jar_dir, j) for j in SPICE_CORENLP_JARS]
    )
    with tempfile.TemporaryDirectory(prefix="fusionbench-spice-") as tmp:
        in_file = os.path.join(tmp, "in.json")
        out_file = os.path.join(tmp, "out.json")
        with open(in_file, "w") as f:
            json.dump(input_data, f, indent=2)
        cmd = ["java", "-Xmx8G", "-cp", classpath, "edu.anu.spice.SpiceScorer", in_file]
        cmd += ["-cache", cache_dir, "-out", out_file, "-subset", "-silent"]
        subprocess.run(cmd, cwd=spice_dir, check=True, capture_output=True)
        with open(out_file) as f:
            results = json.load(f)
    convert = Spice.__new__(Spice).float_convert  # no __init__: it would run the downloader
    by_id = {item["image_id"]: item["scores"] for item in results}
    average = np.mean(np.array([convert(item["scores"]["All"]["f"]) for item in results]))
    scores = [
        {cat: {k: convert(v) for k, v in tup.items()} for cat, tup in by_id[i].items()} for i in img_ids
    ]
    return average, scores


def _spice_score(gts: dict, res: dict, spice_jar_dir: str | os.PathLike | None):
    """(corpus, {id: score}, None) or (None, None, reason)."""
    given = spice_jar_dir is not None
    jar_dir = os.path.abspath(os.fspath(spice_jar_dir)) if given else os.path.join(_spice_dir(), "lib")
    reason = _spice_unavailable_reason(jar_dir, given)
    if reason is not None:
        return None, None, reason
    try:
        if not given:
            from pycocoevalcap.spice.spice import Spice

            # Bypass Spice.__init__ (its downloader); the jars are known to be present.
            score, scores = Spice.__new__(Spice).compute_score(gts, res)
            ids = sorted(gts.keys())  # Spice orders its per-image scores by sorted id
        else:
            score, scores = _spice_from_dir(gts, res, jar_dir)
            ids = sorted(gts.keys())
    except Exception as e:  # a broken SPICE run must not take the other metrics down
        if isinstance(e, subprocess.CalledProcessError):
            lines = (e.stderr or b"").decode("utf-8", "replace").splitlines()
            errors = [ln.strip() for ln in lines if "Exception" in ln or "Error" in ln][:3]
            detail = f"java exited with status {e.returncode}: " + (
                " | ".join(errors) or "; ".join(lines[-3:])
            )
        else:
            detail = f"{type(e).__name__}: {e}"
        return (
            None,
            None,
            (
                f"SPICE failed to run with the jars in {jar_dir} ({detail[:600]}). "
                "Check the two Stanford CoreNLP 3.6.0 jars are complete, that about 8 GB of memory is free, and "
                "that this Java can run SPICE 1.0 (it is known to work with Java 8)."
            ),
        )
    per_image = {i: float(s["All"]["f"]) for i, s in zip(ids, scores)}
    return float(score), per_image, None


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _as_image_id(key: Any, what: str) -> int:
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise ScoreInputError(
            f"{what} key {key!r} is a {type(key).__name__}, not an int image id. "
            "Use the integer COCO image ids as keys (e.g. convert with int(...))."
        )
    return int(key)


def _listed(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _MAX_LISTED else f" ({len(ids)} in all)")


def _validate(
    predictions: Mapping[Any, Any], references: Mapping[Any, Any]
) -> tuple[dict[int, str], dict[int, list[str]]]:
    if not isinstance(predictions, Mapping):
        raise ScoreInputError(
            f"predictions must be a dict {{image_id: caption}}, got a {type(predictions).__name__}. "
            "Build one dict with one generated caption per image id."
        )
    if not isinstance(references, Mapping):
        raise ScoreInputError(
            f"references must be a dict {{image_id: [caption, ...]}}, got a {type(references).__name__}. "
            "Load them with fusionbench.metrics.load_references(path)."
        )
    if len(predictions) == 0:
        raise ScoreInputError(
            "predictions is empty: there is nothing to score. Pass at least one {image_id: caption} pair."
        )
    preds: dict[int, str] = {}
    for key, cap in predictions.items():
        image_id = _as_image_id(key, "predictions")
        if not isinstance(cap, str):
            raise ScoreInputError(
                f"predictions[{image_id}] is a {type(cap).__name__} ({cap!r:.80}), not a str. "
                "Give one decoded caption string per image (decode token ids to text first)."
            )
        preds[image_id] = cap
    refs_by_id: dict[int, Any] = {}
    for key, caps in references.items():
        refs_by_id[_as_image_id(key, "references")] = caps
    unknown = [i for i in preds if i not in refs_by_id]
    if unknown:
        raise ScoreInputError(
            f"predictions has image ids that are not in references: {_listed(unknown)}. "
            "Predict only images of the split the references come from (predictions must cover a subset of "
            "the reference ids)."
        )
    refs: dict[int, list[str]] = {}
    for image_id in preds:
        caps = refs_by_id[image_id]
        if isinstance(caps, str) or not isinstance(caps, (list, tuple)):
            raise ScoreInputError(
                f"references[{image_id}] is a {type(caps).__name__}, not a list of caption strings. "
                "Give each image a list of its reference captions."
            )
        if len(caps) == 0:
            raise ScoreInputError(
                f"references[{image_id}] is empty: image {image_id} has a prediction but no reference captions. "
                "Add its reference captions, or drop the image from the predictions."
            )
        for j, c in enumerate(caps):
            if not isinstance(c, str):
                raise ScoreInputError(
                    f"references[{image_id}][{j}] is a {type(c).__name__} ({c!r:.80}), not a str. "
                    "Reference captions must be strings."
                )
        refs[image_id] = list(caps)
    return preds, refs


def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """``PTBTokenizer().tokenize`` on ``{id: [{"caption": c}]}``, with the line-alignment guard."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    expected = {i: len(caps) for i, caps in captions.items()}
    coco_style = {i: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in caps] for i, caps in captions.items()}
    tokenized = PTBTokenizer().tokenize(coco_style)
    got = {i: len(tokenized.get(i, [])) for i in captions}
    if got != expected:
        bad = [i for i in captions if got[i] != expected[i]]
        raise RuntimeError(
            f"PTBTokenizer returned {sum(got.values())} captions for {sum(expected.values())} sent (first "
            f"mismatching image ids: {_listed(bad)}); a caption probably contains a character Java treats as a "
            "line break. Please report this with the captions of those images."
        )
    return tokenized


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score_captions(
    predictions: Mapping[int, str],
    references: Mapping[int, list[str]],
    *,
    spice_jar_dir: str | os.PathLike | None = None,
    spice: bool = True,
) -> ScoreResult:
    """Score ``{image_id: caption}`` against ``{image_id: [reference, ...]}`` as ``COCOEvalCap`` does.

    Only the predicted ids are scored (their references must exist; extra reference ids are ignored,
    as ``COCOEvalCap`` scores the ids of its results). Returns corpus and per-image scores with the keys
    ``METRIC_KEYS`` (plus ``SPICE`` when its jars are present; otherwise ``unavailable["SPICE"]`` says why).
    ``spice=False`` skips SPICE even when it could run (it is slow and needs ~8 GB).

    Raises ``ScoreInputError`` for empty or malformed inputs or unknown ids, and
    ``MetricUnavailableError`` when Java is missing.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds, refs = _validate(predictions, references)
    check_java()
    with _METEOR_LOCK:
        _get_meteor()  # start (or restart) the JVM now so that it boots while the tokenizer runs

    # COCOEvalCap.evaluate: gts/res as {id: [{"caption": c}, ...]}, tokenized, then each scorer.
    gts = _tokenize(refs)
    res = _tokenize({i: [c] for i, c in preds.items()})

    corpus: dict[str, float] = {}
    per_image: dict[int, dict[str, float]] = {i: {} for i in gts}

    def record(method: str, score: Any, scores: Any) -> None:
        corpus[method] = float(score)
        for image_id, s in zip(gts.keys(), scores):
            per_image[image_id][method] = float(s)

    with contextlib.redirect_stdout(io.StringIO()):
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    for sc, scs, method in zip(score, scores, METRIC_KEYS[:4]):
        record(method, sc, scs)
    record("METEOR", *_meteor_score(gts, res))
    record("ROUGE_L", *Rouge().compute_score(gts, res))
    record("CIDEr", *Cider().compute_score(gts, res))

    unavailable: dict[str, str] = {}
    if not spice:
        unavailable["SPICE"] = (
            "not requested (spice=False); pass spice=True to compute it when its jars are present."
        )
    else:
        spice_corpus, spice_per_image, reason = _spice_score(gts, res, spice_jar_dir)
        if reason is not None:
            unavailable["SPICE"] = reason
        else:
            corpus["SPICE"] = spice_corpus
            for image_id, s in spice_per_image.items():
                per_image[image_id]["SPICE"] = s
    return ScoreResult(corpus=corpus, per_image=per_image, unavailable=unavailable)
