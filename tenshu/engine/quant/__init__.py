"""Quantized weights in the engine: one groupwise integer format (weight.py), the GGML block
types converted into it exactly (ggml.py), GGUF files loaded as models (gguf_file.py), and for
safetensors checkpoints (load.py): quantization on load (quantize.py) with its cache (cache.py),
and GPTQ / AWQ checkpoints (gptq.py)."""

from tenshu.engine.quant.weight import QuantEmbedding, QuantWeight, quant_linear

__all__ = ["QuantEmbedding", "QuantWeight", "quant_linear"]
