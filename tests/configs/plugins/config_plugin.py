"""A research-code plugin named by a config's `plugins:` list (no package, no entry point)."""

from fusionbench.fusion.late import LateFusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("config_gate")
class ConfigGate(LateFusion):
    """Late fusion with a gate, registered from an unpackaged .py file."""
