"""Chat with a model in the terminal, turn after turn.

  tenshu chat                                   the built-in default model (tenshu-tiny)
  tenshu chat path/to/checkpoint                a Hugging Face checkpoint directory
  tenshu chat --system "Answer briefly."        start with a system message

Type a message and press Enter. /clear forgets the conversation, /bye or Ctrl-D leaves. When the
conversation outgrows the model's context window, its oldest turns are dropped (and it says so).
Messages can also be piped in, one per line.
"""

from __future__ import annotations

import sys

from tenshu.cli.run import add_engine_arguments, make_engine, sampling_params, stream

HELP = "/clear  forget the conversation\n/bye    leave (or Ctrl-D)"
MIN_REPLY_TOKENS = 32  # room kept free for the answer when old turns are dropped


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="a Hugging Face checkpoint directory (default: the built-in model)")
    parser.add_argument("--system", help="a system message to start the conversation with")
    add_engine_arguments(parser)


def main(args) -> int:
    engine = make_engine(args)
    if engine.tokenizer is None or not engine.tokenizer.chat_template:
        raise ValueError(f"{args.model} has no chat template; use `tenshu run --raw` instead")
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    interactive = sys.stdin.isatty()
    if interactive:
        print("type a message; /help for commands, /bye to leave", file=sys.stderr)
    while True:
        try:
            line = input(">>> " if interactive else "").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("/bye", "/exit", "/quit"):
            break
        if line == "/clear":
            messages = list(start)
            print("[conversation cleared]", file=sys.stderr)
            continue
        if line in ("/help", "/?"):
            print(HELP, file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        ids = fit_context(engine, messages, len(start))
        if ids is None:
            messages.pop()
            print(f"[that message alone does not fit the {engine.max_model_len}-token context]",
                  file=sys.stderr)
            continue
        text, _ = stream(engine, ids, sampling_params(args))
        messages.append({"role": "assistant", "content": text})
    return 0


def fit_context(engine, messages: list[dict], keep: int) -> list[int] | None:
    """The prompt's token ids, after dropping the oldest user/assistant pairs (never the first
    `keep` messages) until it leaves room for a reply. None if the last message alone is too
    long."""
    while True:
        ids = engine.apply_chat_template(messages)
        if len(ids) + MIN_REPLY_TOKENS <= engine.max_model_len:
            return ids
        if len(messages) - keep <= 1:
            return None
        del messages[keep : keep + 2]
        print("[the oldest turn was dropped to fit the context]", file=sys.stderr)
