"""Start the tenshu server (OpenAI, Anthropic and Ollama APIs on one port).

The gateway is not built yet: this release has the inference engine (`tenshu run`,
`tenshu chat`, `tenshu bench engine`, and `from tenshu import LLM` in Python) and the built-in
default model that the server will serve when no model is configured.
"""

import sys


def add_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)


def main(args) -> int:
    print(
        "tenshu serve: the server is not built yet. This release ships the inference engine: "
        "try `tenshu chat` (the built-in model) or `tenshu run MODEL_DIR \"prompt\"`.",
        file=sys.stderr,
    )
    return 1
