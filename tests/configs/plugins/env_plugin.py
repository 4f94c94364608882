"""A plugin named by the FUSIONBENCH_PLUGINS environment variable."""

from fusionbench.fusion.late import LateFusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("env_gate")
class EnvGate(LateFusion):
    """Late fusion registered from FUSIONBENCH_PLUGINS."""
