"""Stream a completion of a prompt from a model directory to the terminal.

  tenshu run path/to/checkpoint "Once upon a time"
  tenshu run path/to/checkpoint --chat "What is a paged KV cache?"

With --chat the prompt is one user turn, wrapped in the model's chat template.
"""

from __future__ import annotations

import sys

from tenshu.engine import EngineConfig, LLMEngine, RequestOutputKind, SamplingParams


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="a Hugging Face checkpoint directory")
    parser.add_argument("prompt", help="the text to complete")
    parser.add_argument("--chat", action="store_true", help="apply the model's chat template")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (CUDA)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-model-len", type=int)


def main(args) -> int:
    engine = LLMEngine(
        EngineConfig(
            model=args.model, dtype=args.dtype, device=args.device,
            max_model_len=args.max_model_len, max_num_seqs=1,
        )
    )
    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
        max_tokens=args.max_tokens, output_kind=RequestOutputKind.DELTA,
    )
    prompt = args.prompt
    if args.chat:
        prompt = engine.apply_chat_template([{"role": "user", "content": args.prompt}])
    budget = engine.max_model_len - len(engine.tokenize(prompt)[1])
    if params.max_tokens > budget > 0:
        params.max_tokens = budget  # a terminal user wants text, not a context-length error
    engine.add_request("run", prompt, params)
    finish = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            sys.stdout.write(out.outputs[0].text)
            sys.stdout.flush()
            finish = out.outputs[0].finish_reason
    sys.stdout.write("\n")
    if finish == "length":
        print(f"[stopped after {args.max_tokens} tokens]", file=sys.stderr)
    return 0
