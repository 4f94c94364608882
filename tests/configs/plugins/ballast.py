"""A test plugin: late fusion that allocates ``ballast_mb`` MiB when built and never frees it.

It stands in for whatever a cell leaves behind in its process (a library's cache, a leak, memory
the allocator keeps): run in the grid's own process, the next cells' peak memory would include it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fusionbench.fusion.late import LateFusion
from fusionbench.registry import FUSIONS

_HELD: list[torch.Tensor] = []  # module-level: outlives the cell, as a cache or a leak would


@FUSIONS.register("ballast")
class Ballast(LateFusion):
    @dataclass
    class Config(LateFusion.Config):
        ballast_mb: int = 0

    def __init__(self, config: Config, d_model: int) -> None:
        super().__init__(config, d_model)
        if config.ballast_mb:
            _HELD.append(torch.ones(config.ballast_mb * 2**20 // 4))  # touched: resident
