"""The names a config gives its run: which registered component it chose for each kind.

One helper, so metrics.json, a grid's results records and W&B's config and tags name a run's
components with the same keys. Imports nothing (no torch, no OmegaConf).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from omegaconf import DictConfig

#: ``{kind: config key}`` of the components a run is compared by, in the order records list them.
COMPONENT_KEYS: dict[str, str] = {
    "dataset": "data.name",
    "encoder": "model.encoder.name",
    "fusion": "model.fusion.name",
    "decoder": "model.decoder.name",
}


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def components(cfg: DictConfig) -> dict[str, str]:
    """``{"dataset", "encoder", "fusion", "decoder"}``: the registry name chosen for each kind."""
    return {kind: str(_select(cfg, key)) for kind, key in COMPONENT_KEYS.items()}
