"""How leaderboard values read as text: scores x100, parameter counts, assignment values, HTML escapes.

Shared by the Markdown/HTML/CSV renderers, the SVG plots and the terminal tables, so a number
reads the same everywhere.
"""

from __future__ import annotations

import html
import json
from typing import Any

MISSING = "–"
"""What a cell shows when its value is missing."""


def fmt_value(value: Any) -> str:
    """An assignment value as it appears in labels and identity columns (``0.001``, ``{"a": 1}``)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fmt_score(
    mean: float | None, std: float | None = None, ci: tuple[float | None, float | None] | None = None
) -> str:
    """``96.1 ± 1.2 [94.0, 98.3]`` on the x100 scale; ``–`` for a missing mean."""
    if mean is None:
        return MISSING
    text = f"{100 * mean:.1f}"
    if std is not None:
        text += f" ± {100 * std:.1f}"
    if ci is not None and ci[0] is not None and ci[1] is not None:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def fmt_params(n: float | None) -> str:
    """``1.63M``, ``850K``, ``1.2B``."""
    if n is None:
        return MISSING
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return str(int(n))


def fmt_num(value: float | None, digits: int) -> str:
    """A fixed-point number, ``–`` when missing."""
    return MISSING if value is None else f"{value:.{digits}f}"


def esc(text: Any) -> str:
    """HTML/SVG text and attribute escape."""
    return html.escape(str(text), quote=True)
