"""Tiny GGUF files for tests, written with gguf-py's GGUFWriter from a tiny random transformers
checkpoint (tests/checkpoints.py), as llama.cpp's convert_hf_to_gguf.py lays them out.

`make_gguf` quantizes each weight to the type asked for: Q8_0, Q4_0, F16, BF16 and F32 with
gguf-py's own quantizer; Q4_K, Q5_K and Q6_K, which gguf-py can only dequantize, as valid
blocks of random codes and f16 scales (`random_blocks`), scaled so the weights have the
checkpoints' spread. It also writes a transformers checkpoint of the same model with every
weight replaced by gguf-py's dequantization of what the GGUF file holds: the reference the
engine's greedy output is compared with (tests/engine/reference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGUFWriter, TokenType
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize
from transformers import AutoModelForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tests.checkpoints import CHAT_TEMPLATE, IM_END, INIT_STD

ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# Hugging Face name within a layer -> GGUF name (llama.cpp's tensor_mapping.py)
LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# a realistic "Q4_K_M"-like mix: q/k/gate/up 4-bit, v and down 6-bit, o 5-bit
K_MIX = {"attn_q": "Q4_K", "attn_k": "Q4_K", "attn_v": "Q6_K", "attn_output": "Q5_K",
         "ffn_gate": "Q4_K", "ffn_up": "Q4_K", "ffn_down": "Q6_K", "token_embd": "Q6_K",
         "output": "Q8_0"}
LEGACY_MIX = {"attn_q": "Q8_0", "attn_k": "Q4_0", "attn_v": "Q8_0", "attn_output": "Q4_0",
              "ffn_gate": "Q4_0", "ffn_up": "Q8_0", "ffn_down": "Q4_0", "token_embd": "F16",
              "output": "BF16"}


def gguf_name(hf: str) -> str:
    module, kind = hf.rsplit(".", 1)
    if module.startswith("model.layers."):
        _, _, layer, rest = module.split(".", 3)
        return f"blk.{layer}.{LAYER[rest]}.{kind}"
    return f"{TOP[module]}.{kind}"


def random_blocks(kind: str, rows: int, cols: int, seed: int, std: float = INIT_STD) -> np.ndarray:
    """Valid `kind` (Q4_K, Q5_K, Q6_K) blocks for a [rows, cols] weight: random codes and
    sub-block scales, f16 super-block scales chosen so the weights have about `std` spread."""
    qtype = T[kind]
    block, nbytes = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows, cols // block, nbytes), dtype=np.uint8)
    at = 208 if kind == "Q6_K" else 0  # where d (f16) sits; K4/K5: dmin follows it

    def set_scales(d: float) -> None:
        raw[..., at:at + 2] = np.full(raw.shape[:2], d, np.float16).view(np.uint8).reshape(
            *raw.shape[:2], 2)
        if kind != "Q6_K":  # dmin centres the unsigned codes: mean code 7.5 (4-bit), 15.5
            centre = 7.5 if kind == "Q4_K" else 15.5
            raw[..., 2:4] = np.full(raw.shape[:2], d * centre, np.float16).view(
                np.uint8).reshape(*raw.shape[:2], 2)

    set_scales(1.0)
    spread = dequantize(raw.reshape(rows, -1), qtype).std()
    set_scales(std / spread)
    return raw.reshape(rows, -1)


def encode(weight: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A float [rows, cols] weight as `kind`'s data (K-quants: random blocks, see above)."""
    if kind in ("Q4_K", "Q5_K", "Q6_K"):
        return random_blocks(kind, *weight.shape, seed=seed)
    if kind in UNREAD:  # only its size matters: the loader refuses the type before reading it
        block, nbytes = GGML_QUANT_SIZES[T[kind]]
        rows, cols = weight.shape
        return np.random.default_rng(seed).integers(0, 256, (rows, cols // block * nbytes),
                                                    dtype=np.uint8)
    return quantize(weight, T[kind])


UNREAD = ("Q2_K", "Q3_K")  # types tenshu's engine does not read (for the error's test)


def permute(data: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row permutation for the `llama` architecture (convert_hf_to_gguf)."""
    return data.reshape(heads, 2, data.shape[0] // heads // 2, *data.shape[1:]).swapaxes(
        1, 2).reshape(data.shape)


def _tokenizer_metadata(writer: GGUFWriter, checkpoint: Path, vocab_size: int) -> None:
    spec = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"] | {t["content"]: t["id"] for t in spec["added_tokens"]}
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [TokenType.UNUSED] * vocab_size
    special = {t["content"] for t in spec["added_tokens"] if t["special"]}
    for token, i in vocab.items():
        tokens[i] = token
        types[i] = TokenType.CONTROL if token in special else TokenType.NORMAL
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    ids = {t: vocab[config[f"{t}_token"]] for t in ("bos", "eos", "pad")}
    writer.add_eot_token_id(vocab[IM_END])  # the end of a chat turn, as for ChatML models
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = spec["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def make_gguf(checkpoint: Path, out_dir: Path, types: dict[str, str] | None = None,
              default: str = "Q8_0", *, tokenizer: bool = True, seed: int = 0,
              reference: bool = True) -> tuple[Path, Path | None]:
    """Writes `out_dir/model.gguf` from the transformers checkpoint `checkpoint` (llama, qwen2
    or qwen3), each 2-D weight in `types[gguf role]` (else `default`), norms and biases F32.
    Returns (the GGUF file, a transformers checkpoint of its dequantized weights; None with
    `reference=False`, which benchmarks use to skip writing it)."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = model.config
    arch = ARCH[config.model_type]
    types = types or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.gguf"
    writer = GGUFWriter(path, arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = config.rope_parameters
    writer.add_rope_freq_base(rope["rope_theta"])
    if tokenizer:
        _tokenizer_metadata(writer, checkpoint, config.vocab_size)
    if rope["rope_type"] == "llama3":  # llama.cpp keeps it as divisors of the frequencies
        base = 1.0 / rope["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
        writer.add_tensor("rope_freqs.weight", (base / scaled).numpy().astype(np.float32))
    dequantized: dict[str, torch.Tensor] = {}
    for i, (hf, tensor) in enumerate(model.state_dict().items()):
        if hf == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = gguf_name(hf)
        weight = tensor.numpy()
        kind = "F32" if weight.ndim == 1 else types.get(name.split(".")[-2], default)
        data = encode(weight, kind, seed * 1000 + i)
        if reference:
            dequantized[hf] = torch.from_numpy(
                dequantize(data, T[kind]).reshape(weight.shape).copy())
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config.num_attention_heads if "attn_q" in name else \
                config.num_key_value_heads
            data = permute(data, heads)
        writer.add_tensor(name, data, raw_dtype=None if kind in ("F32", "F16") else T[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if not reference:
        return path, None
    model.load_state_dict(dequantized, strict=False)  # the tied lm_head follows the embedding
    model.save_pretrained(out_dir / "reference")
    return path, out_dir / "reference"
