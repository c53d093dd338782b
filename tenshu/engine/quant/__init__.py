"""Quantized weights in the engine: one groupwise integer format (weight.py), the GGML block
types converted into it exactly (ggml.py), and GGUF files loaded as models (gguf_file.py)."""

from tenshu.engine.quant.weight import QuantEmbedding, QuantWeight, quant_linear

__all__ = ["QuantEmbedding", "QuantWeight", "quant_linear"]
