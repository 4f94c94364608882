"""coco-caption's PTB tokenization, run once per reference set and once per evaluation.

``pycocoevalcap.tokenizer.PTBTokenizer.tokenize`` starts a JVM on Stanford's
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` for every call, and
``COCOEvalCap`` calls it twice per evaluation (references, then results). Here the same command,
on the same bytes, with the same punctuation filter, gives the same tokens, but:

* references are tokenised once per reference set (``prepare_references``), cached in-process (LRU,
  keyed by a SHA-256 of the reference content) and on disk under ``fusionbench.paths.cache_dir()``,
  so validation epochs, grid cells and processes share them;
* hypotheses are tokenised in one JVM call per evaluation (``tokenize_lines``);
* the JVM runs with ``-XX:TieredStopAtLevel=1 -XX:+UseSerialGC``, which start faster and do not
  change what the tokenizer outputs.

One subtlety keeps this honest: Stanford's lexer looks past a line end in a few rules (e.g. a
sentence-final abbreviation "Corp." followed by a capitalised line gets an extra "." token), so in
principle a line's tokens can depend on the line after it. Every such case we know of only adds
punctuation that coco-caption removes, so the cached tokens equal those of ``COCOEvalCap``, which
tokenises the references of the scored images in prediction order. When predictions come in the
references' own order (as in validation) the token streams are identical anyway. The first time a
reference set is scored in another order or on a subset, its lines are tokenised once more in
reverse order (every line then has other neighbours, ``check_context``); if any line's tokens
differ, the set is marked ``context_sensitive`` and ``score_captions`` re-tokenises the references
in the scored order, exactly as coco-caption does, whenever that order is not the cached one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusionbench.errors import MetricUnavailableError, ScoreInputError
from fusionbench.io import atomic_write_text

# Characters Python's str.splitlines() splits on, plus NUL; Java's PTBTokenizer (-preserveLines)
# starts a new line at several of them, which would shift every later caption to the wrong image.
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00]")

JVM_FLAGS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
CACHE_FORMAT = 1
MEMORY_CACHE_SIZE = 4  # reference sets (a run has val, test and maybe test_novel); ~0.3 GB per 25k captions


def _jar() -> str:
    from pycocoevalcap.tokenizer import ptbtokenizer

    return os.path.join(
        os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    )


def _punctuations() -> frozenset[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    return frozenset(PUNCTUATIONS)


def tokenize_lines(lines: Sequence[str]) -> list[str]:
    """PTB-tokenise each caption exactly as ``PTBTokenizer.tokenize`` does, in one JVM call.

    Line-break characters inside a caption become spaces (coco-caption already does this for
    ``\\n``); the number of tokenized lines is checked so captions never shift to another image.
    """
    if not lines:
        return []
    jar = _jar()
    if not os.path.isfile(jar):
        raise MetricUnavailableError(
            f"The PTB tokenizer jar of pycocoevalcap is missing ({jar}). Reinstall pycocoevalcap "
            "(`pip install --force-reinstall pycocoevalcap`)."
        )
    text = "\n".join(LINE_BREAKS.sub(" ", c) for c in lines)
    with tempfile.TemporaryDirectory(prefix="fusionbench-ptb-") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "wb") as f:
            f.write(text.encode())
        cmd = ["java", *JVM_FLAGS, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", path]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise MetricUnavailableError(
            f"The PTB tokenizer (java) exited with status {proc.returncode}: "
            f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]!r}. Check that `java -version` works."
        )
    out = proc.stdout.decode().split("\n")
    if len(out) < len(lines) or any(out[len(lines) :]):
        raise RuntimeError(
            f"PTBTokenizer returned {len([x for x in out if x])}+ lines for {len(lines)} captions sent; a caption "
            "probably contains a character Java treats as a line break. Please report this with the captions."
        )
    punct = _punctuations()
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in out[: len(lines)]]


def tokenize_captions(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """``{id: [caption, ...]}`` -> ``{id: [tokenized, ...]}`` in one JVM call (``PTBTokenizer.tokenize``)."""
    flat = [c for caps in captions.values() for c in caps]
    tokens = iter(tokenize_lines(flat))
    return {i: [next(tokens) for _ in caps] for i, caps in captions.items()}


# ---------------------------------------------------------------------------------------------
# Prepared reference sets
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PreparedReferences:
    """A reference set tokenised once, with per-scorer caches built on first use.

    ``key``: SHA-256 of the reference content (ids, captions and their order).
    ``tokenized``: ``{id: [tokenized caption, ...]}`` in the order of the references.
    ``context_sensitive``: some line tokenised differently with other neighbours (see the module
    docstring); the scorer then re-tokenises references whenever the scored order differs.
    None until ``check_context`` has run (only needed once the set is scored in another order).
    ``scorer_cache``: free slots for the fast scorers (``fusionbench.metrics.fast``).
    """

    key: str
    references: dict[int, list[str]]
    tokenized: dict[int, list[str]]
    context_sensitive: bool | None = None
    scorer_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def ids(self) -> list[int]:
        return list(self.references)

    def __len__(self) -> int:
        return len(self.references)


_MEMORY: OrderedDict[str, PreparedReferences] = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_BUILDING: dict[str, threading.Lock] = {}


def _checked(references: Mapping[Any, Any]) -> dict[int, list[str]]:
    import numbers

    if not isinstance(references, Mapping):
        raise ScoreInputError(
            f"references must be a dict {{image_id: [caption, ...]}}, got a {type(references).__name__}. "
            "Load them with fusionbench.metrics.load_references(path)."
        )
    out: dict[int, list[str]] = {}
    for key, caps in references.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise ScoreInputError(f"references key {key!r} is a {type(key).__name__}, not an int image id.")
        if isinstance(caps, str) or not isinstance(caps, (list, tuple)):
            raise ScoreInputError(
                f"references[{key}] is a {type(caps).__name__}, not a list of caption strings."
            )
        for j, c in enumerate(caps):
            if not isinstance(c, str):
                raise ScoreInputError(f"references[{key}][{j}] is a {type(c).__name__}, not a str.")
        out[int(key)] = list(caps)
    return out


def references_key(references: Mapping[int, Sequence[str]]) -> str:
    """SHA-256 of the reference content (ids, captions, order) and of the tokenizer that reads it."""
    h = hashlib.sha256()
    h.update(f"ptb-v{CACHE_FORMAT}|{os.path.basename(_jar())}|".encode())
    h.update(json.dumps([[int(i), list(c)] for i, c in references.items()], ensure_ascii=False).encode())
    return h.hexdigest()


def _disk_path(key: str):
    from fusionbench.paths import cache_dir

    return cache_dir() / "metrics" / f"ptb-refs-{key[:40]}.json"


def _load_disk(key: str, refs: dict[int, list[str]]) -> PreparedReferences | None:
    try:
        path = _disk_path(key)
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key or data.get("format") != CACHE_FORMAT:
            return None
        tokens = data["tokenized"]
        if len(tokens) != len(refs):
            return None
        tokenized = {}
        for (i, caps), toks in zip(refs.items(), tokens):
            if len(toks) != len(caps) or not all(isinstance(t, str) for t in toks):
                return None
            tokenized[i] = list(toks)
        flag = data["context_sensitive"]
        return PreparedReferences(key, refs, tokenized, None if flag is None else bool(flag))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache file is rebuilt


def _save_disk(prepared: PreparedReferences) -> None:
    data = {
        "format": CACHE_FORMAT,
        "key": prepared.key,
        "context_sensitive": prepared.context_sensitive,
        "tokenized": list(prepared.tokenized.values()),
    }
    try:
        # compact and not fsynced: a cache on the scoring path, and a damaged file is rebuilt
        atomic_write_text(_disk_path(prepared.key), json.dumps(data, ensure_ascii=False), fsync=False)
    except OSError:
        pass  # the disk cache is an optimisation only


def prepare_references(
    references: Mapping[int, Sequence[str]], *, disk_cache: bool = True
) -> PreparedReferences:
    """The tokenised reference set, from the in-process LRU, the disk cache, or one JVM call.

    Pass the result to ``score_captions(..., prepared=...)`` (``CaptionMetric`` does) to skip even
    the hashing; any call with references of the same content reuses the same entry.
    """
    refs = _checked(references)
    key = references_key(refs)
    with _MEMORY_LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            _MEMORY.move_to_end(key)
            return hit
        building = _BUILDING.setdefault(key, threading.Lock())
    with building:  # a second caller with the same references waits for the first one's result
        try:
            return _build(key, refs, disk_cache)
        finally:
            with _MEMORY_LOCK:
                _BUILDING.pop(key, None)


def _build(key: str, refs: dict[int, list[str]], disk_cache: bool) -> PreparedReferences:
    with _MEMORY_LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            return hit
    prepared = _load_disk(key, refs) if disk_cache else None
    if prepared is None:
        prepared = PreparedReferences(key, refs, tokenize_captions(refs))
        if disk_cache:
            _save_disk(prepared)
    with _MEMORY_LOCK:
        prepared = _MEMORY.setdefault(key, prepared)
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > MEMORY_CACHE_SIZE:
            _MEMORY.popitem(last=False)
    return prepared


def check_context(prepared: PreparedReferences, *, disk_cache: bool = True) -> bool:
    """Whether some reference line tokenises differently with other neighbours (computed once).

    The lines are tokenised in reverse order, so that every line is followed (and preceded) by
    another line than in the cached stream, and compared with the cached tokens.
    """
    with prepared.lock:
        if prepared.context_sensitive is None:
            lines = [c for caps in prepared.references.values() for c in caps]
            forward = [t for toks in prepared.tokenized.values() for t in toks]
            backward = tokenize_lines(lines[::-1])[::-1]
            prepared.context_sensitive = forward != backward
            if disk_cache:
                _save_disk(prepared)
        return prepared.context_sensitive


def prepare_references_in_background(references: Mapping[int, Sequence[str]]) -> None:
    """``prepare_references`` in a daemon thread (e.g. while the first training epoch runs); errors
    are left for the scoring call to report."""

    def run() -> None:
        try:
            prepare_references(references)
        except Exception:
            pass

    threading.Thread(target=run, name="fusionbench-prepare-references", daemon=True).start()


def clear_reference_cache() -> None:
    """Forget the in-process reference sets (the disk cache stays)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()
