"""Chat with a model in the terminal, turn after turn, in-process or against a running server.

  tenshu chat                                   the built-in model, in this process
  tenshu chat path/to/checkpoint                a Hugging Face checkpoint directory
  tenshu chat --url http://127.0.0.1:7311       a running tenshu (or any OpenAI-compatible
                                                server); --key or TENSHU_API_KEY for its key
  tenshu chat --system "Answer briefly."        start with a system message

Commands: /model [NAME] lists the models or switches to one, /system [TEXT] sets (or clears)
the system message, /reset forgets the conversation, /bye or Ctrl-D leaves. Start a message
with \"\"\" to write several lines, and end it with \"\"\". Arrow keys recall earlier input
(kept in $TENSHU_HOME/chat_history). When the conversation outgrows the model's context
window, its oldest turns are dropped (and it says so). Messages can also be piped in.
"""

from __future__ import annotations

import sys

from tenshu.cli.chat_sessions import LocalSession, RemoteSession
from tenshu.config import api_key_from_env, private_file, tenshu_home

HELP = """/model [NAME]   list the models, or switch to NAME
/system [TEXT]  set the system message (no text: remove it)
/reset          forget the conversation (also /clear)
/bye            leave (or Ctrl-D)
\"\"\"             start or end a message of several lines"""


def add_arguments(parser) -> None:
    from tenshu.cli.run import add_engine_arguments

    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="a checkpoint directory, or with --url a served model's name")
    parser.add_argument("--url", help="chat with a running server at this address instead")
    parser.add_argument("--key", help="the server's API key (default: TENSHU_API_KEY)")
    parser.add_argument("--system", help="a system message to start the conversation with")
    add_engine_arguments(parser)


def main(args) -> int:
    if args.url:
        session = RemoteSession(args.url, args.key or api_key_from_env(), args.model, args)
    else:
        session = LocalSession(args.model, args)
    system = args.system
    messages: list[dict] = []
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_history()
        print(f"chatting with {session.model}; /help for commands, /bye to leave",
              file=sys.stderr)
    while True:
        line = _read_message(interactive)
        if line is None:
            break
        if not line.strip():
            continue
        command, _, rest = line.strip().partition(" ")
        if command in ("/bye", "/exit", "/quit"):
            break
        if command in ("/reset", "/clear"):
            messages = []
            print("[conversation cleared]", file=sys.stderr)
        elif command in ("/help", "/?"):
            print(HELP, file=sys.stderr)
        elif command == "/system":
            system = rest.strip() or None
            print(f"[system message {'set' if system else 'removed'}]", file=sys.stderr)
        elif command == "/model":
            if rest.strip():
                try:
                    session.switch(rest.strip())
                except ValueError as exc:  # a typo should not end the conversation
                    print(f"[{exc}]", file=sys.stderr)
                    continue
                print(f"[now chatting with {session.model}]", file=sys.stderr)
            else:
                for name in session.models():
                    print(("* " if name == session.model else "  ") + name)
        else:
            messages.append({"role": "user", "content": line})
            start = [{"role": "system", "content": system}] if system else []
            try:
                reply = session.reply(start, messages)
            except ValueError as exc:  # the server refused this turn; the chat goes on
                print(f"[{exc}]", file=sys.stderr)
                reply = None
            if reply is None:
                messages.pop()
            else:
                messages.append({"role": "assistant", "content": reply})
    return 0


def _read_message(interactive: bool) -> str | None:
    """One message: a line, or the lines between \"\"\" and \"\"\". None at end of input."""
    try:
        line = input(">>> " if interactive else "")
    except EOFError:
        return None
    if not line.lstrip().startswith('"""'):
        return line
    lines = [line.lstrip()[3:]]
    while not lines[-1].rstrip().endswith('"""') or len(lines) == 1 and lines[0] == "":
        try:
            lines.append(input("... " if interactive else ""))
        except EOFError:
            break
    lines[-1] = lines[-1].rstrip().removesuffix('"""')
    return "\n".join(lines).strip("\n")


def _enable_history() -> None:
    try:
        import atexit
        import readline
    except ImportError:  # not every platform has readline
        return
    path = tenshu_home() / "chat_history"
    try:
        private_file(path)  # what was said is its owner's alone
        readline.read_history_file(path)
    except OSError:
        return
    readline.set_history_length(1000)
    atexit.register(readline.write_history_file, path)
