"""Early fusion with the LSTM: the image enters with every word (par-inject), or only before them.

Pre-inject alone collapses onto one caption at the default budget (docs/early_fusion_collapse.md),
so by default the LSTM also takes the mean prefix with each input word; ``prefix_every_step:
false`` keeps Show and Tell's pre-inject. Late and attention fusion must not be touched by either.
"""

import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.fusion.base import FusedContext
from fusionbench.model import build_model, build_tokenizer

CAPTIONS = ["a red circle left of a blue square", "two green triangles"]


def make(fusion: str, **decoder):
    cfg = OmegaConf.create(
        {
            "d_model": 16,
            "encoder": {"name": "vit", "img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 16},
            "fusion": {"name": fusion},
            "decoder": {"name": "lstm", "attention_dim": 8, **decoder},
        }
    )
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    torch.manual_seed(0)
    return build_model(cfg, tok).eval(), tok


def step_from_same_state(model, tok, prefix_a, prefix_b):
    """Outputs of one word step from the same state, the image in ``ctx`` being A or B."""
    mask = torch.ones(1, 1, dtype=torch.bool)
    state = model.start(FusedContext(prefix=prefix_a, prefix_mask=mask))
    word = torch.tensor([tok.bos_id])
    with torch.no_grad():
        out_a, _ = model.step_logprobs(word, state, FusedContext(prefix=prefix_a, prefix_mask=mask))
        out_b, _ = model.step_logprobs(word, state, FusedContext(prefix=prefix_b, prefix_mask=mask))
    return out_a, out_b


@pytest.mark.parametrize("every_step", [True, False])
def test_prefix_enters_every_word_only_with_par_inject(every_step):
    model, tok = make("early", prefix_every_step=every_step)
    torch.manual_seed(1)
    a, b = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    out_a, out_b = step_from_same_state(model, tok, a, b)
    assert (not torch.allclose(out_a, out_b)) == every_step


@pytest.mark.parametrize("fusion", ["late", "attention"])
def test_option_leaves_other_fusions_unchanged(fusion):
    on, _ = make(fusion, prefix_every_step=True)
    off, _ = make(fusion, prefix_every_step=False)
    for (name, p), (_, q) in zip(on.state_dict().items(), off.state_dict().items()):
        assert p.shape == q.shape and torch.equal(p, q), name
    assert on.decoder.cells[0].input_size == (32 if fusion == "attention" else 16)
