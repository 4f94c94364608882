"""Where a run's log lines and warnings go; nothing here acts at import time.

* ``quiet_known_noise()``: warnings and log lines that every run would print and that say nothing
  about it (a frozen backbone is in eval mode on purpose; Lightning's advert for its logging
  service). Called when a run starts (``run_experiment``, ``evaluate_checkpoint``) and by the grid
  runner; calling it again adds nothing.
* ``log_to_file(path)``: while a block runs, Lightning's log lines ("GPU available ...",
  "Restoring states ...", "Loaded model weights ..."), fusionbench's own INFO lines, other
  libraries' logging and Python warnings go to ``path`` only. The grid runner wraps each cell in
  it, so the console shows the grid's progress and one line per finished cell, and each cell's
  folder keeps its log. A single ``fusionbench run`` does not: its console shows Lightning's lines
  as Lightning prints them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

#: Loggers whose records ``log_to_file`` takes over (Lightning installs its own console handler
#: on the first two; ``fusionbench`` is raised to INFO so the file shows what a cell read/cached).
CAPTURED_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "fusionbench")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A frozen backbone stays in eval mode on purpose (fixed BatchNorm statistics); Lightning warns about it.
_EVAL_MODE = r"Found \d+ module\(s\) in eval mode"
# Lightning 2.6 on torch 2.14 warns about its own use of a torch pytree API at every fit and test.
_LEAF_SPEC = r".*isinstance\(treespec, LeafSpec\)"


class _NoAdvert(logging.Filter):
    """Drop Lightning's logging-service tip, which it prints again for every run of a grid."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_known_noise() -> None:
    """Install the warning filters and the log filter above (idempotent: no duplicates)."""
    for message in (_EVAL_MODE, _LEAF_SPEC):
        warnings.filterwarnings("ignore", message=message)  # an equal filter moves to the front
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvert) for f in logger.filters):
        logger.addFilter(_NoAdvert())


@contextlib.contextmanager
def log_to_file(path: str | Path) -> Iterator[Path]:
    """Send logging and warnings to ``path`` (appended) instead of the console while the block runs.

    The captured loggers' handlers, levels and propagation, the root logger's handlers and the
    warnings machinery (``warnings.catch_warnings``) are restored afterwards, also on error.
    Handlers a user attached to the root logger keep receiving what propagates to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    saved = []
    for name in CAPTURED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        if name == "fusionbench" and logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)  # other libraries' records: to the file, not to logging's last resort
    to_file = logging.getLogger("py.warnings")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        to_file.warning("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield path
    finally:
        root.removeHandler(handler)
        for logger, handlers, propagate, level in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()
