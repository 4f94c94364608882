"""A test plugin: late fusion that never merges the image, so every image gets the same caption.

It stands in for a cell whose decoder learned to ignore its visual input (a collapsed cell)."""

from __future__ import annotations

from fusionbench.fusion.late import LateFusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("blind")
class Blind(LateFusion):
    def combine(self, hidden, ctx):
        return hidden
