"""Run agents on a running tenshu server, and look after the MCP servers they use.

  tenshu agent list                          the agents tenshu.toml and agents/*.toml define
  tenshu agent run researcher "summarise my notes on X"
                                             start a run and follow it: each step as it
                                             happens, the model's words as they come, and a
                                             prompt when a call needs your approval
  tenshu agent run researcher "..." --detach print the run's id and return
  tenshu agent servers                       MCP servers: approved, or changed since (admins)
  tenshu agent trust notes                   accept a server's changed tool list (admins)

Runs belong to the key's user (--key, or TENSHU_API_KEY); `tenshu runs` lists and shows them,
and approves, denies or cancels them. The server is http://127.0.0.1:7311 unless --url says.
"""

from __future__ import annotations

import json
import sys

import httpx

from tenshu.config import DEFAULT_PORT, api_key_from_env

TIMEOUT = httpx.Timeout(30.0, read=None)  # a followed run may be quiet for a long time


def add_server_options(parser) -> None:
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                        help="the tenshu server (default: %(default)s)")
    parser.add_argument("--key", help="an API key (default: TENSHU_API_KEY)")


def add_arguments(parser) -> None:
    add_server_options(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the configured agents")
    run = sub.add_parser("run", help="start a run and follow it")
    run.add_argument("name", help="the agent")
    run.add_argument("task", help="what it should do")
    run.add_argument("--detach", action="store_true", help="print the run's id and return")
    sub.add_parser("servers", help="MCP servers and whether their tools are approved")
    trust = sub.add_parser("trust", help="approve an MCP server's changed tool list")
    trust.add_argument("server")


def client(args) -> httpx.Client:
    key = args.key or api_key_from_env()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=TIMEOUT,
                        trust_env=False)


def call(http: httpx.Client, method: str, path: str, **kwargs) -> dict:
    """The JSON answer; ValueError with the server's message for an error."""
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach {http.base_url}: {exc}") from None
    if response.status_code >= 400:
        raise ValueError(_message(response))
    return response.json()


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the server answered {response.status_code}"


def main(args) -> int:
    with client(args) as http:
        if args.action == "list":
            for agent in call(http, "GET", "/tenshu/v1/agents")["data"]:
                print(f"{agent['name']:<20} {agent['model']:<20} {', '.join(agent['tools'])}")
                if agent["description"]:
                    print(f"{'':<20} {agent['description']}")
            return 0
        if args.action == "servers":
            for server in call(http, "GET", "/tenshu/v1/mcp/servers")["data"]:
                print(f"{server['name']:<20} {server['transport']:<6} {server['state']:<9} "
                      f"{', '.join(server['tools'])}")
            return 0
        if args.action == "trust":
            call(http, "POST", f"/tenshu/v1/mcp/servers/{args.server}/approve")
            print(f"{args.server}: its current tools are approved")
            return 0
        if args.detach:
            run = call(http, "POST", f"/tenshu/v1/agents/{args.name}/runs",
                       json={"task": args.task})
            print(run["id"])
            return 0
        return follow(http, f"/tenshu/v1/agents/{args.name}/runs", "POST",
                      json={"task": args.task, "stream": True})


def follow(http: httpx.Client, path: str, method: str = "GET", **kwargs) -> int:
    """Print a run's events as they come; 0 if it succeeded. At an approval, ask here when
    there is a terminal (else say how to decide, and keep following)."""
    status = None
    try:
        with http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise ValueError(_message(response))
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                status = show(http, event) or status
    except httpx.HTTPError as exc:
        raise ValueError(f"lost the server at {http.base_url}: {exc}") from None
    return 0 if status == "succeeded" else 1


def show(http: httpx.Client, event: dict) -> str | None:
    kind, run_id = event["type"], event.get("run_id")
    if kind == "run.created":
        print(f"run {event['run']['id']} ({event['run']['agent']})", file=sys.stderr)
    elif kind == "text.delta":
        print(event["text"], end="", flush=True)
    elif kind == "step.started" and event["kind"] == "tool":
        print(f"\n-> {event['name']} {json.dumps(event.get('input', {}))}", file=sys.stderr)
    elif kind == "step.completed" and event["kind"] == "tool":
        output = event["output"]
        mark = "!!" if output["is_error"] else "<-"
        print(f"{mark} {event['name']}: {_short(output['text'])}", file=sys.stderr)
    elif kind == "step.completed":
        print(file=sys.stderr)
    elif kind == "approval.required":
        print(f"\n?? {event['tool']} ({event['class']}) wants to run with "
              f"{json.dumps(event['input'])}: {event['why']}", file=sys.stderr)
        ask(http, run_id)
    elif kind == "run.completed":
        line = f"run {run_id}: {event['status']}"
        print(line + (f" ({event['why']})" if event.get("why") else ""), file=sys.stderr)
        return event["status"]
    return None


def ask(http: httpx.Client, run_id: str) -> None:
    if not sys.stdin.isatty():
        print(f"   decide with: tenshu runs approve {run_id}  (or deny)", file=sys.stderr)
        return
    answer = input("   approve? [y/N] ").strip().lower()
    verb = "approve" if answer in ("y", "yes") else "deny"
    call(http, "POST", f"/tenshu/v1/runs/{run_id}/{verb}", json={})


def _short(text: str, most: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[:most] + "..."
