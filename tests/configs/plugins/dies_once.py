"""A test plugin: late fusion whose process dies (``os._exit``) once, in the second training epoch.

It stands in for a worker killed by the OS, a scheduler or a lost node: the process ends without
returning anything. The marker file makes it die only the first time, so a resumed run finishes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fusionbench.fusion.late import LateFusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("dies_once")
class DiesOnce(LateFusion):
    @dataclass
    class Config(LateFusion.Config):
        marker: str = ""
        after_training_calls: int = 3  # tiny.yaml: 48 images / batch 16 = 3 steps per epoch

    def __init__(self, config: Config, d_model: int) -> None:
        super().__init__(config, d_model)
        self.config = config
        self.calls = 0

    def prepare(self, vis):
        if self.training:
            self.calls += 1
            marker = Path(self.config.marker)
            if self.calls > self.config.after_training_calls and not marker.exists():
                marker.write_text("died once\n")
                os._exit(3)
        return super().prepare(vis)
