"""fusionbench: benchmark multimodal fusion strategies for image captioning."""

__version__ = "0.1.0"
