"""Caption metrics equal to coco-caption's ``COCOEvalCap``, computed fast enough for training loops.

``COCOEvalCap.evaluate`` builds ``{id: [{"caption": c}]}`` for references (gts) and predictions (res),
runs ``PTBTokenizer().tokenize`` on each, then pycocoevalcap's ``Bleu(4)``, ``Meteor()``, ``Rouge()``,
``Cider()`` (and ``Spice()``). ``score_captions`` returns the same corpus and per-image numbers, on
coco-caption's raw scale (BLEU 0-1, CIDEr-D roughly 0-10), to the last bit, while doing far less work
when it is called again and again with the same references (validation every epoch, grid cells):

* references are PTB-tokenised once per reference set and cached by content
  (``fusionbench.metrics.ptb.prepare_references``); hypotheses are tokenised in one JVM call;
* BLEU, ROUGE-L and CIDEr-D compute their reference side (n-gram counts, document frequencies,
  tf-idf vectors, LCS match masks) once per reference set (``fusionbench.metrics.fast``);
* METEOR runs in one long-lived JVM per process (restarted if it dies), is fed all segments at
  once instead of one round trip per image, remembers the statistics of (hypothesis, references)
  pairs it has already scored (METEOR scores each segment independently), and works in a thread
  while BLEU, ROUGE-L and CIDEr-D are computed.

pycocoevalcap's scorers stay the reference implementation: ``score_captions_reference`` is the
``COCOEvalCap`` flow itself, and the tests compare both on randomised inputs.

Two deviations from coco-caption, both only where it would silently mis-pair captions and images:

* Characters that Java's PTBTokenizer treats as a line break (``\\r``, ``\\x0b``, ``\\x0c``, ``\\x00``,
  ``\\u2028``, ...) are replaced by a space before tokenization, as coco-caption already does for
  ``\\n``. Otherwise one caption becomes two lines and every later caption shifts to the wrong image.
* The number of tokenized captions is checked against the number sent; a mismatch raises instead of
  scoring mis-aligned captions.
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
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fusionbench.errors import MetricUnavailableError, ScoreInputError
from fusionbench.metrics import fast, meteor_service
from fusionbench.metrics.keys import METRIC_KEYS
from fusionbench.metrics.ptb import (
    LINE_BREAKS,
    PreparedReferences,
    check_context,
    prepare_references,
    tokenize_lines,
)

SPICE_JARS_ENV = "FUSIONBENCH_SPICE_JARS"  # folder with the CoreNLP jars, when spice_jar_dir is not given
SPICE_CORENLP_JARS: tuple[str, ...] = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")

_LINE_BREAKS = LINE_BREAKS

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
# Added to pycocoevalcap's METEOR command: the throughput ("parallel") garbage collector. METEOR's
# start-up is loading its paraphrase table, an allocation burst on which Java's default G1 spends
# concurrent threads that compete with the scorer's other work on a small machine; on 2 cores the
# first answer comes ~0.5 s sooner (median of 3: 4.3 s vs 4.8 s). Scores do not depend on the collector.
METEOR_JVM_OPTIONS: tuple[str, ...] = ("-XX:+UseParallelGC",)


def _launch_meteor(meteor_cls: type, jar: str):
    """A ``pycocoevalcap`` ``Meteor`` whose JVM runs its own command (``jar`` and arguments) plus
    ``METEOR_JVM_OPTIONS``; ``Meteor.__init__`` would start the JVM with a fixed command."""
    meteor = meteor_cls.__new__(meteor_cls)
    meteor.meteor_cmd = [
        "java", *METEOR_JVM_OPTIONS, "-jar", "-Xmx2G", os.path.basename(jar),
        "-", "-", "-stdio", "-l", "en", "-norm",
    ]  # fmt: skip
    meteor.meteor_p = subprocess.Popen(
        meteor.meteor_cmd,
        cwd=os.path.dirname(jar),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    meteor.lock = threading.Lock()
    return meteor


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
    _METEOR = _launch_meteor(Meteor, jar)
    atexit.unregister(close_meteor)  # registered once, when a JVM first exists (not at import)
    atexit.register(close_meteor)
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
    if not _METEOR_LOCK.acquire(timeout=2.0):
        # A warm-up or scoring thread is waiting on the JVM: killing it makes that thread fail fast.
        meteor = _METEOR
        if meteor is not None:
            with contextlib.suppress(Exception):
                meteor.meteor_p.kill()
        _METEOR_LOCK.acquire()
    try:
        if _METEOR is not None:
            _discard_meteor(_METEOR)
            _METEOR = None
    finally:
        _METEOR_LOCK.release()


# METEOR statistics of (cleaned hypothesis, references) pairs already scored. METEOR scores every
# "SCORE" line on its own (the corpus score comes from the "EVAL" line over all statistics), so a
# cached statistics line is exactly what the JVM would answer again.
METEOR_STATS_CACHE_SIZE = 200_000
_METEOR_STATS: OrderedDict[tuple[str, tuple[str, ...]], str] = OrderedDict()


def clear_meteor_cache() -> None:
    """Forget remembered METEOR statistics (tests and benchmarks that want a cold scorer)."""
    with _METEOR_LOCK:
        _METEOR_STATS.clear()


def _readline(proc) -> str:
    line = proc.stdout.readline()
    if not line:
        raise ValueError("the METEOR JVM closed its output")
    return line.decode().strip()


def _meteor_exchange(meteor, gts: dict, res: dict) -> tuple[float, list[float]]:
    """``Meteor.compute_score(gts, res)``: the same lines to the same JVM, the same answers.

    pycocoevalcap writes one ``SCORE`` line and waits for its answer before the next, one round trip
    per image. Here a writer thread sends all ``SCORE`` lines while this thread reads the answers,
    and pairs whose statistics are remembered are not sent at all. Call with _METEOR_LOCK held.
    """
    assert gts.keys() == res.keys()
    proc = meteor.meteor_p
    keys = []
    for i in gts:
        assert len(res[i]) == 1
        hypothesis = res[i][0].replace("|||", "").replace("  ", " ")
        keys.append((hypothesis, tuple(gts[i])))
    missing = list(dict.fromkeys(k for k in keys if k not in _METEOR_STATS))
    fresh: dict[tuple[str, tuple[str, ...]], str] = {}
    if missing:
        payload = b"".join(
            "{}\n".format(" ||| ".join(("SCORE", " ||| ".join(refs), hyp))).encode() for hyp, refs in missing
        )
        failure: list[BaseException] = []

        def write() -> None:
            try:
                proc.stdin.write(payload)
                proc.stdin.flush()
            except BaseException as e:  # reported by the reading thread
                failure.append(e)

        writer = threading.Thread(target=write, name="fusionbench-meteor-writer", daemon=True)
        writer.start()
        try:
            for key in missing:
                fresh[key] = _readline(proc)
        finally:
            if writer.is_alive() and proc.poll() is not None:
                writer.join(timeout=10)
        writer.join()
        if failure:
            raise failure[0]
    stats = [fresh[k] if k in fresh else _METEOR_STATS[k] for k in keys]
    eval_line = "EVAL" + "".join(f" ||| {st}" for st in stats)
    proc.stdin.write(f"{eval_line}\n".encode())
    proc.stdin.flush()
    scores = [float(_readline(proc)) for _ in keys]
    score = float(_readline(proc))
    for k in keys:  # remember (and refresh) the pairs of this call
        if k in fresh:
            _METEOR_STATS[k] = fresh[k]
        _METEOR_STATS.move_to_end(k)
    while len(_METEOR_STATS) > METEOR_STATS_CACHE_SIZE:
        _METEOR_STATS.popitem(last=False)
    return score, scores


def _meteor_score(gts: dict, res: dict, *, reference: bool = False) -> tuple[float, list[float]]:
    """METEOR from the grid's service when this process is a grid cell (``meteor_service``), else
    on this process's shared JVM."""
    served = meteor_service.ask(gts, res, reference=reference)
    if served is not None:
        return served
    return _local_meteor_score(gts, res, reference=reference)


def serve_meteor():
    """A context manager: this process's JVM answers the METEOR requests of its child processes
    (the cells of a grid) until the block ends; see ``fusionbench.metrics.meteor_service``."""
    return meteor_service.serve(_local_meteor_score)


def _local_meteor_score(gts: dict, res: dict, *, reference: bool = False) -> tuple[float, list[float]]:
    """METEOR on this process's shared JVM; one retry on a fresh JVM if it died.

    ``reference=True`` uses pycocoevalcap's own ``Meteor.compute_score`` (one round trip per image).
    """
    global _METEOR
    with _METEOR_LOCK:
        last_error: BaseException | None = None
        for _attempt in range(2):
            meteor = _get_meteor()
            try:
                if reference:
                    return meteor.compute_score(gts, res)
                return _meteor_exchange(meteor, gts, res)
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
            except BaseException:
                # Interrupted half-way (Ctrl-C, ...): answers may be left unread, which would be read
                # as the next call's answers. Never reuse this JVM.
                _discard_meteor(meteor)
                _METEOR = None
                raise
        raise MetricUnavailableError(
            f"The METEOR JVM failed twice in a row ({last_error}). It needs about 2 GB of memory (-Xmx2G) and a "
            f"working Java; check `java -jar {os.path.join(os.path.dirname(_meteor_module_file()), 'meteor-1.5.jar')}` "
            "runs in a shell."
        )


def start_meteor(warm: bool = False) -> threading.Thread | None:
    """Start the shared METEOR JVM in the background if it is not running; never raises.

    METEOR spends ~10 s loading its paraphrase tables before it answers the first line.
    ``warm=True`` also sends one segment from a background thread, so that the loading happens
    now (e.g. while the first training epoch runs) instead of inside the first validation.
    Returns the background thread (join it to wait), or None when there was nothing to do.
    """

    def run() -> None:
        global _METEOR
        with contextlib.suppress(Exception):
            check_java()
            with _METEOR_LOCK:
                meteor = _get_meteor()
                if warm and not getattr(meteor, "_fusionbench_warm", False):
                    try:
                        proc = meteor.meteor_p
                        proc.stdin.write(b"SCORE ||| a dog ||| a dog\n")
                        proc.stdin.flush()
                        _readline(proc)
                        meteor._fusionbench_warm = True
                    except BaseException:
                        _discard_meteor(meteor)  # an unread answer must never reach a scoring call
                        _METEOR = None
                        raise

    if _meteor_alive(_METEOR) and (not warm or getattr(_METEOR, "_fusionbench_warm", False)):
        return None
    if meteor_service.available():  # a grid cell: the grid's JVM answers, none is booted here
        return None
    thread = threading.Thread(target=run, name="fusionbench-meteor-start", daemon=True)
    thread.start()
    return thread


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
        f"{default_lib} (or into a folder passed as spice_jar_dir or named by ${SPICE_JARS_ENV}). SPICE also "
        "needs about 8 GB of memory."
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
    """(corpus, {id: score}, None) or (None, None, reason).

    The jars are looked for in ``spice_jar_dir``, else in ``$FUSIONBENCH_SPICE_JARS``, else in
    pycocoevalcap's own ``spice/lib`` folder.
    """
    if spice_jar_dir is None and os.environ.get(SPICE_JARS_ENV):
        spice_jar_dir = os.environ[SPICE_JARS_ENV]
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


def listed_ids(ids: list) -> str:
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
            f"predictions has image ids that are not in references: {listed_ids(unknown)}. "
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
            f"mismatching image ids: {listed_ids(bad)}); a caption probably contains a character Java treats as a "
            "line break. Please report this with the captions of those images."
        )
    return tokenized


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _add_spice(
    result: ScoreResult, gts: dict, res: dict, spice: bool, spice_jar_dir: str | os.PathLike | None
) -> ScoreResult:
    if not spice:
        result.unavailable["SPICE"] = (
            "not requested (spice=False); pass spice=True to compute it when its jars are present."
        )
        return result
    spice_corpus, spice_per_image, reason = _spice_score(gts, res, spice_jar_dir)
    if reason is not None:
        result.unavailable["SPICE"] = reason
    else:
        result.corpus["SPICE"] = spice_corpus
        for image_id, s in spice_per_image.items():
            result.per_image[image_id]["SPICE"] = s
    return result


def _record(result: ScoreResult, ids: list[int], method: str, score: Any, scores: Any) -> None:
    result.corpus[method] = float(score)
    for image_id, s in zip(ids, scores):
        result.per_image[image_id][method] = float(s)


def _prepared_for(
    references: Mapping[Any, Any], refs: dict[int, list[str]], prepared: PreparedReferences | None
) -> PreparedReferences:
    """A prepared reference set that holds ``refs`` (the validated references of the predicted ids)."""
    if prepared is not None and all(prepared.references.get(i) == caps for i, caps in refs.items()):
        return prepared
    try:
        return prepare_references(references)
    except ScoreInputError:  # a malformed entry of an image that is not predicted: leave it out
        return prepare_references(refs)


def score_captions(
    predictions: Mapping[int, str],
    references: Mapping[int, list[str]],
    *,
    spice_jar_dir: str | os.PathLike | None = None,
    spice: bool = True,
    prepared: PreparedReferences | None = None,
) -> ScoreResult:
    """Score ``{image_id: caption}`` against ``{image_id: [reference, ...]}``, equal to ``COCOEvalCap``.

    Only the predicted ids are scored (their references must exist; extra reference ids are ignored,
    as ``COCOEvalCap`` scores the ids of its results). Returns corpus and per-image scores with the keys
    ``METRIC_KEYS`` (plus ``SPICE`` when its jars are present; otherwise ``unavailable["SPICE"]`` says why).
    ``spice=False`` skips SPICE even when it could run (it is slow and needs ~8 GB).
    ``prepared``: the result of ``prepare_references(references)``, to skip even its cache lookup
    (used only if it holds the same references).

    Raises ``ScoreInputError`` for empty or malformed inputs or unknown ids, and
    ``MetricUnavailableError`` when Java is missing.
    """
    preds, refs = _validate(predictions, references)
    check_java()
    start_meteor()  # boots while the tokenizer runs (no-op when it is running)
    ids = list(preds)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fusionbench-score") as pool:
        hyp_tokens = pool.submit(tokenize_lines, [preds[i] for i in ids])
        prep = _prepared_for(references, refs, prepared)
        own_refs = None
        if ids != prep.ids and check_context(prep):
            # Some reference line tokenises differently with other neighbours: tokenise the scored
            # references in the scored order, exactly as coco-caption does.
            own_refs = pool.submit(lambda: _tokenize_refs({i: refs[i] for i in ids}))
        gts = own_refs.result() if own_refs is not None else {i: prep.tokenized[i] for i in ids}
        res = {i: [t] for i, t in zip(ids, hyp_tokens.result())}
        meteor = pool.submit(_meteor_score, gts, res)
        try:
            own = gts if own_refs is not None else None
            bleu = fast.bleu(prep, ids, [res[i][0] for i in ids], own)
            rouge = fast.rouge(prep, ids, [res[i][0] for i in ids], own)
            cider = fast.cider(prep, ids, [res[i][0] for i in ids], own)
        finally:
            meteor_result = meteor.result()

    result = ScoreResult(corpus={}, per_image={i: {} for i in ids})
    for sc, scs, method in zip(*bleu, METRIC_KEYS[:4]):
        _record(result, ids, method, sc, scs)
    _record(result, ids, "METEOR", *meteor_result)
    _record(result, ids, "ROUGE_L", *rouge)
    _record(result, ids, "CIDEr", *cider)
    return _add_spice(result, gts, res, spice, spice_jar_dir)


def _tokenize_refs(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    from fusionbench.metrics.ptb import tokenize_captions

    return tokenize_captions(captions)


def score_captions_reference(
    predictions: Mapping[int, str],
    references: Mapping[int, list[str]],
    *,
    spice_jar_dir: str | os.PathLike | None = None,
    spice: bool = True,
) -> ScoreResult:
    """``COCOEvalCap.evaluate`` step for step with pycocoevalcap's own tokenizer and scorers.

    The reference implementation that ``score_captions`` is tested and benchmarked against (slower:
    it redoes all reference work on every call). Same inputs, outputs and errors as ``score_captions``,
    including the two alignment guards; METEOR uses the shared JVM through ``Meteor.compute_score``.
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
    ids = list(gts)
    result = ScoreResult(corpus={}, per_image={i: {} for i in ids})
    with contextlib.redirect_stdout(io.StringIO()):
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    for sc, scs, method in zip(score, scores, METRIC_KEYS[:4]):
        _record(result, ids, method, sc, scs)
    _record(result, ids, "METEOR", *_meteor_score(gts, res, reference=True))
    _record(result, ids, "ROUGE_L", *Rouge().compute_score(gts, res))
    _record(result, ids, "CIDEr", *Cider().compute_score(gts, res))
    return _add_spice(result, gts, res, spice, spice_jar_dir)
