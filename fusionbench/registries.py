"""The registry instances, one per kind of component.

Built-in components live in their concept folder and register themselves there; each registry
imports its built-in modules on first lookup (no import-order dependence).
"""

from __future__ import annotations

from fusionbench.registry import Registry

ENCODERS: Registry = Registry("encoder", "model.encoder", builtins=["fusionbench.encoders.cnn"])
FUSIONS: Registry = Registry(
    "fusion",
    "model.fusion",
    builtins=["fusionbench.fusion.early", "fusionbench.fusion.late", "fusionbench.fusion.attention"],
)
DECODERS: Registry = Registry(
    "decoder",
    "model.decoder",
    builtins=["fusionbench.decoders.lstm", "fusionbench.decoders.transformer", "fusionbench.decoders.bert"],
)
DATASETS: Registry = Registry("dataset", "data", builtins=["fusionbench.data.shapes"])

ALL = {"encoders": ENCODERS, "fusions": FUSIONS, "decoders": DECODERS, "datasets": DATASETS}
