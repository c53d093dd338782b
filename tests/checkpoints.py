"""Tiny random Hugging Face checkpoints, made locally, for tests and benchmarks.

Nothing is downloaded: `make_tokenizer` trains a small byte-level BPE tokenizer (Qwen/Llama-3 style)
and `make_checkpoint` writes a randomly initialised Llama / Qwen2 / Qwen3 / Mistral model with
transformers' own `save_pretrained`, so the engine's real loader reads real files: `config.json`,
`generation_config.json`, `model.safetensors` (or shards plus `model.safetensors.index.json`),
`tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja`.

Each family carries the feature that distinguishes it, so a loader that skips it fails tests:

* ``llama``: Llama-3.1 ``llama3`` RoPE scaling (saved as ``config.json["rope_parameters"]``),
  rope_theta 5e5, untied embeddings.
* ``qwen2``: q/k/v projection biases (random, non-zero), rope_theta 1e6, tied embeddings.
* ``qwen3``: per-head q/k RMSNorm (random gains), ``head_dim`` 32 while hidden_size /
  num_attention_heads is 16 (as in the real Qwen3 models), rope_theta 1e6, tied embeddings.
* ``mistral``: sliding-window attention with a window of 48 tokens; query position p attends to
  key positions p-47..p (transformers' ``kv_idx > q_idx - sliding_window``), untied embeddings.

All models are tiny (hidden 64, 2 layers, 4 query heads, 2 KV heads, vocab 512) and run on CPU in
milliseconds. The tokenizer adds no BOS on encode; non-ASCII characters become several byte tokens.
"""

from __future__ import annotations

import copy
import functools
import zlib
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaForCausalLM,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>")
BOS, EOS, PAD, IM_START, IM_END = SPECIAL_TOKENS
VOCAB_SIZE = 512

# Weights are drawn from N(0, INIT_STD^2), RMSNorm gains from U(0.5, 1.5). With transformers'
# default std of 0.02 the tiny models are nearly linear: logits (std ~0.16) barely depend on the
# context and greedy decoding soon repeats one token (at once, with tied embeddings). With 0.2 the
# logits have std ~1.6 and attention scores std ~1-3 (peaked, not one-hot). Over 2400 greedy steps
# (4 families x tied/untied x 3 seeds x 100 tokens) the top1-top2 logit gap had median 0.38
# (7.5% of |top1|), 1st percentile 6e-3 and minimum 2e-4, above float32 noise (cached and
# uncached transformers forwards differ by up to 2e-5); fewer than 1% of gaps were < 1e-3 * |top1|;
# 100 generated tokens held 43-82 distinct ids (median ~72). Unconstrained, about a quarter of
# greedy generations hit an EOS id within 100 tokens.
INIT_STD = 0.2

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Mostly English, so the 512-entry vocabulary fills up with English merges and the rare non-ASCII
# characters stay split into several byte tokens (streaming detokenization must cope with that).
_CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello, world! How are you today?
I'm fine, thank you -- and you? Yes: it's (mostly) sunny; there is a 42% chance of rain.
Once upon a time, in a small village near the mountains, there lived an old clockmaker.
Every morning he opened his shop, wound the great clock above the door, and made some tea.
Children would stop by on their way to school to ask him questions about gears and springs.
"Why does the pendulum swing?" asked a girl named Ada. "Because gravity pulls it back," he said.
She wrote the answer in her notebook, next to drawings of stars, rivers and tall ships.
Years later, Ada became an engineer who built bridges, engines and machines that could count.
The assistant answers questions, writes short stories, explains science and helps with code.
Q: What is the capital of France? A: Paris. Q: What is 7 * 6? A: 42. Q: Is water wet? A: Yes!
def add(a, b):\n    return a + b  # simple function\nprint(add(1, 2), [3, 4], {"key": 'value'})
if (x >= 10 && y <= 20) { z = x / y; } else { z = -1; }  // C-like code, with <tags> & more.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2,718 #hash @user $5 ^caret ~tilde `tick` |pipe|
Users often write in other languages too: café, naïve, über, 日本語, and even emoji like 🙂.
Please remember that the train leaves at seven o'clock, so we should be ready before then.
Thank you for reading this text; it is used only to train a very small tokenizer for tests.
"""


@functools.cache
def _trained_tokenizer() -> Tokenizer:
    """Trains the byte-level BPE once per process (a few milliseconds, deterministic)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS], trainer=trainer)
    return tokenizer


def _hf_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=_trained_tokenizer(),  # copied by the constructor
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
    )


def make_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Saves the test tokenizer (ChatML chat template, no BOS added on encode) into `out_dir`."""
    tokenizer = _hf_tokenizer()
    tokenizer.save_pretrained(out_dir)
    return tokenizer


_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
}

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
_ROPE_1M = {"rope_type": "default", "rope_theta": 1e6}

_FAMILIES: dict[str, tuple[type[PreTrainedModel], dict[str, Any]]] = {
    "llama": (LlamaForCausalLM, dict(tie_word_embeddings=False, rope_parameters=_LLAMA3_ROPE)),
    "qwen2": (Qwen2ForCausalLM, dict(tie_word_embeddings=True, rope_parameters=_ROPE_1M)),
    "qwen3": (
        Qwen3ForCausalLM,
        dict(tie_word_embeddings=True, head_dim=32, rope_parameters=_ROPE_1M),
    ),
    "mistral": (
        MistralForCausalLM,
        dict(tie_word_embeddings=False, sliding_window=48, rope_parameters=_ROPE_1M),
    ),
}
FAMILIES = tuple(_FAMILIES)


def _randomize(model: PreTrainedModel, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights are listed once
            if "norm" in name:  # RMSNorm gains, including Qwen3's q_norm / k_norm
                param.copy_(torch.empty(param.shape).uniform_(0.5, 1.5, generator=generator))
            else:  # embeddings, projections, Qwen2's q/k/v biases
                param.copy_(torch.randn(param.shape, generator=generator) * INIT_STD)


def make_checkpoint(
    out_dir: Path,
    family: str,
    *,
    dtype: torch.dtype = torch.float32,
    tied: bool | None = None,
    tokenizer: bool = True,
    max_shard_size: str | None = None,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Writes a tiny random `family` checkpoint (see `FAMILIES`) into `out_dir` and returns it.

    `tied=None` keeps the family's default for `tie_word_embeddings`; `max_shard_size` (e.g. "20KB")
    splits the weights into several safetensors files plus an index; `tokenizer=False` writes no
    tokenizer files; `config_overrides` go to the config class last (e.g. `num_hidden_layers=1`,
    `head_dim=16`, `sliding_window=None`). Weights follow `INIT_STD` and depend only on `seed`.
    """
    model_cls, family_settings = _FAMILIES[family]
    tok = _hf_tokenizer()
    im_end_id = tok.convert_tokens_to_ids(IM_END)
    settings = {
        **_TINY,
        **copy.deepcopy(family_settings),  # the config standardizes rope_parameters in place
        "vocab_size": -(-len(tok) // 8) * 8,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if tied is not None:
        settings["tie_word_embeddings"] = tied
    config = model_cls.config_class(**(settings | config_overrides))

    with torch.random.fork_rng():  # transformers' own init draws from the global generator
        model = model_cls(config).eval()
    _randomize(model, zlib.crc32(f"{family}/{seed}".encode()))  # families differ at equal seeds
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=[im_end_id, tok.eos_token_id],
        pad_token_id=tok.pad_token_id,
    )
    model.to(dtype).save_pretrained(out_dir, max_shard_size=max_shard_size or "50GB")
    if tokenizer:
        make_tokenizer(out_dir)
    return out_dir


QWEN3_06B_SHAPE: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
}


def qwen3_06b_config() -> Qwen3Config:
    """The Qwen3-0.6B architecture (random weights only: for benchmarks, too big for unit tests).

    A checkpoint of that shape: `make_checkpoint(d, "qwen3", dtype=torch.bfloat16, **QWEN3_06B_SHAPE)`.
    """
    return Qwen3Config(**copy.deepcopy(QWEN3_06B_SHAPE), bos_token_id=151643, eos_token_id=151645)
