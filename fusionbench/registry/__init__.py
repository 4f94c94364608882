"""The registries: the ``Registry`` class (``core``) and one instance per kind of component.

Built-in components live in their concept folder and register themselves there; each registry
imports its built-in modules on first lookup (no import-order dependence), lists plugin
components from its entry-point group without importing them, and checks that every registered
class subclasses the kind's base class (MMF-style typed registration).
"""

from __future__ import annotations

from fusionbench.data.base import CaptionDataset
from fusionbench.decoders.base import Decoder
from fusionbench.encoders.base import Encoder
from fusionbench.fusion.base import Fusion
from fusionbench.metrics.base import ExtraMetric
from fusionbench.registry.core import Entry, Registry

ENCODERS: Registry = Registry(
    "encoder",
    "model.encoder",
    base=Encoder,
    builtins=["fusionbench.encoders.cnn", "fusionbench.encoders.vit", "fusionbench.encoders.regions"],
    entry_point_group="fusionbench.encoders",
)
FUSIONS: Registry = Registry(
    "fusion",
    "model.fusion",
    base=Fusion,
    builtins=["fusionbench.fusion.early", "fusionbench.fusion.late", "fusionbench.fusion.attention"],
    entry_point_group="fusionbench.fusions",
)
DECODERS: Registry = Registry(
    "decoder",
    "model.decoder",
    base=Decoder,
    builtins=["fusionbench.decoders.lstm", "fusionbench.decoders.transformer", "fusionbench.decoders.bert"],
    entry_point_group="fusionbench.decoders",
)
DATASETS: Registry = Registry(
    "dataset",
    "data",
    base=CaptionDataset,
    builtins=[
        "fusionbench.data.shapes",
        "fusionbench.data.karpathy",
        "fusionbench.data.coco",
        "fusionbench.data.folder",
    ],
    entry_point_group="fusionbench.datasets",
)
METRICS: Registry = Registry(
    "metric",
    "metrics",
    base=ExtraMetric,
    builtins=["fusionbench.metrics.extra"],
    entry_point_group="fusionbench.metrics",
)

ALL = {
    "encoders": ENCODERS,
    "fusions": FUSIONS,
    "decoders": DECODERS,
    "datasets": DATASETS,
    "metrics": METRICS,
}

__all__ = ["ALL", "DATASETS", "DECODERS", "ENCODERS", "FUSIONS", "METRICS", "Entry", "Registry"]
