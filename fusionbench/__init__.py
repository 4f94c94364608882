"""fusionbench: benchmark multimodal fusion strategies for image captioning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fusionbench.inference import Captioner

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(checkpoint: Any, **kwargs: Any) -> Captioner:
    """A ``Captioner`` from a run's checkpoint: ``fusionbench.load(ckpt).caption(images)``.

    See ``fusionbench.inference`` (imported on first use, so ``import fusionbench`` stays light).
    """
    from fusionbench.inference import load as _load

    return _load(checkpoint, **kwargs)
