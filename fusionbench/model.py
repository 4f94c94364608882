"""``CaptioningModel``: encoder -> fusion -> decoder, a plain ``nn.Module``.

Kept apart from the training loop so it can be used, exported and tested without Lightning
(HF's VisionEncoderDecoderModel shows the value of one projection between any encoder and any
decoder; ours also serves decoders without cross-attention, through the fusion contract).
The framework, not each encoder, projects visual features to the decoder width ``d_model``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from fusionbench.cost import count_parameters
from fusionbench.decoders.base import Decoder
from fusionbench.decoding import DecodingConfig
from fusionbench.decoding.search import decode
from fusionbench.encoders.base import Encoder, RawFeatures, VisualFeatures
from fusionbench.fusion.base import FusedContext, Fusion
from fusionbench.registry import DECODERS, ENCODERS, FUSIONS


class CaptioningModel(nn.Module):
    """An image captioner assembled from one encoder, one fusion strategy and one decoder."""

    def __init__(self, encoder: Encoder, fusion: Fusion, decoder: Decoder, d_model: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = fusion
        self.decoder = decoder
        self.d_model = d_model
        self.token_proj = nn.Sequential(nn.Linear(encoder.out_dim, d_model), nn.LayerNorm(d_model))
        self.pooled_proj = nn.Sequential(nn.Linear(encoder.out_dim, d_model), nn.LayerNorm(d_model))

    @property
    def tokenizer(self):
        return self.decoder.tokenizer

    # -- pieces ---------------------------------------------------------------------------------
    def encode(self, images: Tensor | RawFeatures, boxes: list[Tensor] | None = None) -> VisualFeatures:
        """Visual features projected to ``d_model``.

        ``images`` may also be the encoder's stored backbone features (``RawFeatures``, read from a
        feature cache or precomputed files); the encoder then only runs its ``assemble`` stage.
        """
        if isinstance(images, RawFeatures):
            vis = self.encoder.assemble(images)
        else:
            vis = self.encoder(images, boxes)
        return VisualFeatures(
            tokens=self.token_proj(vis.tokens),
            mask=vis.mask,
            pooled=self.pooled_proj(vis.pooled),
            boxes=vis.boxes,
        )

    def context(self, images: Tensor, boxes: list[Tensor] | None = None) -> FusedContext:
        return self.fusion.prepare(self.encode(images, boxes))

    def logits(self, hidden: Tensor, ctx: FusedContext) -> Tensor:
        return self.decoder.lm_head(self.fusion.combine(hidden, ctx))

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        boxes: list[Tensor] | None = None,
        caption_index: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher forcing: next-word logits ``[C, T, V]`` at every position of ``input_ids`` ``[C, T]``.

        ``caption_index`` ``[C]`` names the image row of each caption, so several captions of one
        image share a single encoder pass; without it captions and images correspond one to one.
        """
        ctx = self.context(images, boxes)
        if caption_index is not None:
            ctx = ctx.index_select(caption_index)
        hidden, extras = self.decoder(input_ids, ctx)
        return self.logits(hidden, ctx), extras

    # -- decoding interface (fusionbench.decoding.search) ---------------------------------------
    def start(self, ctx: FusedContext) -> dict:
        return self.decoder.init_state(ctx)

    def step_logprobs(self, last_ids: Tensor, state: dict, ctx: FusedContext) -> tuple[Tensor, dict]:
        hidden, state = self.decoder.step(last_ids, state, ctx)
        return torch.log_softmax(self.logits(hidden, ctx).float(), dim=-1), state

    def reorder(self, state: dict, index: Tensor) -> dict:
        return self.decoder.reorder_state(state, index)

    @torch.no_grad()
    def generate(
        self, images: Tensor, boxes: list[Tensor] | None = None, decoding: DecodingConfig | None = None
    ) -> Tensor:
        """Caption ids ``[B, L]`` decoded with ``decoding`` (default: ``DecodingConfig()``'s beam search;
        ``beam_size=1`` is greedy, see ``fusionbench.decoding.search.decode``)."""
        tok = self.tokenizer
        return decode(
            self,
            self.context(images, boxes),
            decoding if decoding is not None else DecodingConfig(),
            bos_id=tok.bos_id,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
        )

    @torch.no_grad()
    def generate_with_attention(
        self, images: Tensor, boxes: list[Tensor] | None = None, decoding: DecodingConfig | None = None
    ) -> tuple[Tensor, Tensor | None, VisualFeatures]:
        """``generate``'s ids ``[B, L]``, the decoder's attention over the visual tokens at each of
        those steps ``[B, L, N]`` (None without attention fusion) and the visual features.

        The attention comes from one teacher-forced pass over the generated caption, which equals
        the decoding steps' (the decoders' ``forward`` and ``step`` agree) for any search."""
        ids = self.generate(images, boxes, decoding)
        bos = torch.full((ids.shape[0], 1), self.tokenizer.bos_id, dtype=ids.dtype, device=ids.device)
        vis = self.encode(images, boxes)
        _, extras = self.decoder(torch.cat([bos, ids[:, :-1]], dim=1), self.fusion.prepare(vis))
        return ids, extras.get("attention"), vis

    def caption(
        self, images: Tensor, boxes: list[Tensor] | None = None, decoding: DecodingConfig | None = None
    ) -> list[str]:
        """Plain-text captions for a batch of images (float RGB in [0, 1])."""
        ids = self.generate(images, boxes, decoding)
        return [self.tokenizer.decode(row.tolist()) for row in ids]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (projections counted with the encoder side) and in total."""
        parts = {
            "encoder": [self.encoder],
            "projection": [self.token_proj, self.pooled_proj],
            "fusion": [self.fusion],
            "decoder": [self.decoder],
        }
        counts = count_parameters(self, parts)
        return {**counts["components"], "total": counts["total"], "trainable": counts["trainable"]}


def build_tokenizer(model_cfg: DictConfig, captions: list[str], min_count: int):
    """The decoder's tokenizer, fitted on train captions (a word vocabulary, or BERT's WordPiece)."""
    entry, dec_cfg = DECODERS.config_object(model_cfg.decoder)
    return entry.obj.build_tokenizer(dec_cfg, captions, min_count)


def build_model(model_cfg: DictConfig, tokenizer) -> CaptioningModel:
    """Assemble a ``CaptioningModel`` from the ``model`` section of a validated experiment config."""
    d_model = int(model_cfg.d_model)
    encoder = ENCODERS.build(model_cfg.encoder)
    fusion = FUSIONS.build(model_cfg.fusion, d_model=d_model)
    decoder = DECODERS.build(model_cfg.decoder, d_model=d_model, tokenizer=tokenizer, fusion=fusion)
    return CaptioningModel(encoder, fusion, decoder, d_model)
