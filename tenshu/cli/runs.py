"""Agent runs on a running tenshu server: list them, show one, approve or deny the call it waits
on, cancel it.

  tenshu runs list                           your runs, newest first (--status waiting_approval)
  tenshu runs show run_4f1c...               a run and every step it took
  tenshu runs follow run_4f1c...             its steps so far, then live to its end
  tenshu runs approve run_4f1c...            run the call it waits on
  tenshu runs deny run_4f1c... --reason "not that folder"
  tenshu runs cancel run_4f1c...

The key (--key, or TENSHU_API_KEY) says whose runs these are; the server is
http://127.0.0.1:7311 unless --url says.
"""

from __future__ import annotations

import json

from tenshu.cli.agent import add_server_options, call, client, follow


def add_arguments(parser) -> None:
    add_server_options(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="your runs, newest first")
    listing.add_argument("--status", help="only runs in this state")
    listing.add_argument("--agent", help="only this agent's runs")
    listing.add_argument("--limit", type=int, default=20)
    for action, text in (("show", "a run and its steps"), ("follow", "follow a run live"),
                         ("approve", "run the call it waits on"),
                         ("deny", "refuse the call it waits on"), ("cancel", "stop it")):
        p = sub.add_parser(action, help=text)
        p.add_argument("id", metavar="RUN_ID")
        if action in ("approve", "deny"):
            p.add_argument("--reason", default="", help="said to the model and in the journal")
        if action == "show":
            p.add_argument("--json", action="store_true", help="the whole record as JSON")


def main(args) -> int:
    with client(args) as http:
        if args.action == "list":
            params = {"limit": args.limit, **({"status": args.status} if args.status else {}),
                      **({"agent": args.agent} if args.agent else {})}
            for run in call(http, "GET", "/tenshu/v1/runs", params=params)["data"]:
                print(f"{run['id']}  {run['created_at'][:19]}  {run['agent']:<16} "
                      f"{run['status']:<17} {_short(run['task'], 60)}")
            return 0
        if args.action == "show":
            run = call(http, "GET", f"/tenshu/v1/runs/{args.id}")
            if args.json:
                print(json.dumps(run, indent=2))
                return 0
            print(f"run      {run['id']}\nagent    {run['agent']}\nstatus   {run['status']}"
                  + (f" ({run['why']})" if run["why"] else "")
                  + f"\ntask     {run['task']}\nsteps    {run['model_steps']}   tokens {run['tokens']}")
            for step in run["steps"]:
                print(f"  {step['seq']:>3} {step['kind']:<5} {step['name']:<28} "
                      f"{step['status']:<16} {_summary(step)}")
            if run["result"]:
                print(f"result\n{run['result']}")
            return 0
        if args.action == "follow":
            return follow(http, f"/tenshu/v1/runs/{args.id}/events")
        if args.action == "cancel":
            run = call(http, "POST", f"/tenshu/v1/runs/{args.id}/cancel")
            print(f"{run['id']}: {run['status']}")
            return 0
        step = call(http, "POST", f"/tenshu/v1/runs/{args.id}/{args.action}",
                    json={"reason": args.reason})
        print(f"{args.id}: {step['name']} {step['status']}")
        return 0


def _summary(step: dict) -> str:
    data = step["data"]
    if step["kind"] == "model":
        message = data.get("message", {})
        text = " ".join(b.get("text", "") for b in message.get("content", [])
                        if b.get("type") == "text")
        calls = [b["name"] for b in message.get("content", []) if b.get("type") == "tool_use"]
        return _short(text, 60) + (f" -> {', '.join(calls)}" if calls else "")
    output = data.get("output")
    return _short(output["text"], 60) if output else json.dumps(data.get("input", {}))[:60]


def _short(text: str, most: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[:most - 3] + "..."
