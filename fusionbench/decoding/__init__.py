"""Decoding: the settings (``settings``: ``DecodingConfig``, no torch) and the searches that use
them (``search``: greedy and batched beam search over the decoder step interface, ``decode``)."""

from fusionbench.decoding.settings import DecodingConfig

__all__ = ["DecodingConfig"]
