"""Stream a model's answer to one prompt to the terminal.

  tenshu run "hello, who are you?"                  the built-in default model (tenshu-tiny)
  tenshu run path/to/checkpoint "What is RoPE?"     a Hugging Face checkpoint directory
  tenshu run path/to/checkpoint "Once upon" --raw   plain completion, no chat template
  tenshu run model.gguf "hi"                        a GGUF file (or an Ollama model's name)
  tenshu run path/to/checkpoint "hi" --quantization int4

The prompt is one user turn in the model's chat template, when it has one; --raw completes the
text as it is. For a conversation, use `tenshu chat`.
"""

from __future__ import annotations

import argparse
import sys

from tenshu.config import resolve_model, tenshu_home
from tenshu.engine import EngineConfig, LLMEngine, RequestOutputKind, SamplingParams


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="a Hugging Face checkpoint directory (default: the built-in model)")
    parser.add_argument("prompt", help="the prompt")
    parser.add_argument("--raw", action="store_true", help="complete the text, no chat template")
    add_engine_arguments(parser)


def add_engine_arguments(parser) -> None:
    """Sampling and engine flags, shared with `tenshu chat`."""
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (CUDA)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--quantization", choices=["int8", "int4", "gptq", "awq"],
                        help="int8/int4: quantize a float checkpoint on load (cached beside it)")
    parser.add_argument("--kv-cache-dtype", default="auto",
                        choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--int8-activations", action=argparse.BooleanOptionalAction,
                        default=True, help="quantized models decode with int8 activations and "
                        "multiply prompts in bf16 where the CPU has it (off: float32)")


def make_engine(args) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=resolve_model(args.model), dtype=args.dtype, device=args.device,
            max_model_len=args.max_model_len, max_num_seqs=1, quantization=args.quantization,
            quantization_cache_dir=str(tenshu_home() / "cache"),
            kv_cache_dtype=args.kv_cache_dtype, int8_activations=args.int8_activations,
        )
    )


def sampling_params(args) -> SamplingParams:
    return SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
        max_tokens=args.max_tokens, output_kind=RequestOutputKind.DELTA,
    )


def stream(engine: LLMEngine, prompt: str | list[int], params: SamplingParams) -> tuple[str, str]:
    """Generate, writing text to stdout as it arrives; return (text, finish reason)."""
    budget = engine.max_model_len - len(engine.tokenize(prompt)[1])
    if params.max_tokens > budget > 0:
        params.max_tokens = budget  # a terminal user wants text, not a context-length error
    engine.add_request("cli", prompt, params)
    pieces, finish = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            sys.stdout.write(out.outputs[0].text)
            sys.stdout.flush()
            pieces.append(out.outputs[0].text)
            finish = out.outputs[0].finish_reason
    sys.stdout.write("\n")
    if finish == "length":
        print(f"[stopped after {params.max_tokens} tokens]", file=sys.stderr)
    return "".join(pieces), finish


def main(args) -> int:
    engine = make_engine(args)
    prompt = args.prompt
    if not args.raw and engine.tokenizer is not None and engine.tokenizer.chat_template:
        prompt = engine.apply_chat_template([{"role": "user", "content": args.prompt}])
    stream(engine, prompt, sampling_params(args))
    return 0
