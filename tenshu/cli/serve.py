"""Start the tenshu server: the OpenAI, Anthropic and Ollama APIs on one port.

  tenshu serve                                  the built-in model, on 127.0.0.1:7311
  tenshu serve --model ~/models/Qwen3-0.6B      a checkpoint directory (named after it)
  tenshu serve --model ~/models/qwen.gguf       a GGUF file (named qwen)
  tenshu serve --model qwen2.5:7b               a model Ollama pulled (also ollama:qwen2.5:7b),
                                                read in place from $OLLAMA_MODELS
  tenshu serve --model Qwen3-0.6B               what `tenshu pull` put in $TENSHU_HOME/models
  tenshu serve --model qwen=~/models/Qwen3-0.6B --model tiny=path/to/other
  tenshu serve --host 0.0.0.0                   listen beyond loopback (API keys required)
  tenshu serve --model DIR --quantization int4  quantize a float checkpoint's layers on load

Point clients at it:
  OpenAI SDK      base_url="http://127.0.0.1:7311/v1"
  Claude Code     ANTHROPIC_BASE_URL=http://127.0.0.1:7311
  Ollama clients  OLLAMA_HOST=http://127.0.0.1:7311

Settings come from $TENSHU_HOME/tenshu.toml ([server], and the models, tiers, routes and
budgets of docs/config.md; `tenshu config check` validates it), then these flags. API keys: `tenshu keys create --name NAME`; once one exists,
every request needs one. Stop with Ctrl-C or SIGTERM: requests in flight get --grace seconds.

The server answers at once (/health) and loads the models in the background; /ready answers
200 once they are in, and a request that comes sooner waits for its model. An idle model stays
loaded (server.model_keep_alive, or a model's keep_alive, releases it: docs/serve.md).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from tenshu.config import DEFAULT_PORT, load_server_settings, parse_model_arg


def add_arguments(parser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--model", action="append", metavar="[NAME=]PATH",
                        help="a model to serve (repeatable); default: the built-in model")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file (default: $TENSHU_HOME/tenshu.toml)")
    parser.add_argument("--grace", type=float, metavar="SECONDS",
                        help="on shutdown, how long requests in flight may run (default 10)")
    parser.add_argument("--max-queue", type=int, metavar="N",
                        help="requests that may wait for the engine before 429 (default 256)")
    parser.add_argument("--kv-cache-gib", type=float, metavar="GIB",
                        help="KV cache memory per model on CPU (default 2)")
    parser.add_argument("--kv-cache-dtype", choices=["auto", "bfloat16", "float16", "float32"],
                        help="the KV cache's dtype (default auto: the model's; bfloat16 holds "
                             "twice the context of a float32-computed model)")
    parser.add_argument("--quantization", choices=["int8", "int4", "gptq", "awq"],
                        help="int8/int4: quantize float checkpoints on load (cached beside the "
                             "model); gptq/awq: the checkpoints are (read as such anyway)")
    parser.add_argument("--int8-activations", action=argparse.BooleanOptionalAction,
                        help="quantized models decode with activations rounded to int8 and "
                             "multiply prompts in bf16 where the CPU has it, as llama.cpp does "
                             "(default on; --no-int8-activations: float32)")
    parser.add_argument("--max-loras", type=int, metavar="N",
                        help="LoRA adapters served at once, each a model (default 4)")
    parser.add_argument("--max-lora-rank", type=int, metavar="R",
                        help="the highest adapter rank accepted (default 64)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])


def main(args) -> int:
    # Start-up makes millions of objects that live as long as the server (torch, transformers,
    # the app); collecting garbage as they come walks them over and over, a second or more on
    # a small machine. run() collects once, freezes them and turns the collector back on
    # (api/server.py's settle_heap); an error before that turns it on here.
    gc.disable()
    try:
        return _serve(args)
    finally:
        gc.enable()


def _serve(args) -> int:
    from tenshu.api.server import build_server, run
    from tenshu.jobs import configured_jobs

    settings = load_server_settings(
        args.config,
        host=args.host,
        port=args.port,
        models=tuple(parse_model_arg(m) for m in args.model) if args.model else None,
        grace_seconds=args.grace,
        max_queue=args.max_queue,
        kv_cache_memory_gib=args.kv_cache_gib,
        kv_cache_dtype=args.kv_cache_dtype,
        int8_activations=args.int8_activations,
        max_loras=args.max_loras,
        quantization=args.quantization,
        max_lora_rank=args.max_lora_rank,
        log_level=args.log_level,
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(message)s")
    for spec in settings.served_models():
        if spec.backend == "embedded" and not Path(spec.path).exists():
            raise ValueError(f"model {spec.name}: {spec.path} does not exist (give a checkpoint "
                             "directory, a .gguf file or an Ollama model name)")
    server = build_server(settings, jobs=configured_jobs(args.config))
    names = ", ".join(m.name for m in server.gateway.models())
    url = f"http://{_url_host(settings.host)}:{settings.port}"
    print(f"tenshu serving {names} on {url}", file=sys.stderr)
    print(f"  OpenAI: {url}/v1   Anthropic: {url}   Ollama: {url}", file=sys.stderr)
    print(f"  models load in the background: {url}/ready answers 200 once they are in",
          file=sys.stderr)
    if not server.app.state.auth.is_required():
        print("  no API keys: open to this machine only (`tenshu keys create` adds one)",
              file=sys.stderr)
    run(server)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
