"""Show where one request went and why: its route, tier, every backend tried, cost and timing.

  tenshu trace req_4f1c0a9e2b7d          the id in a response's request-id header
  tenshu trace chatcmpl-4f1c0a9e2b7d     or the id a client saw (chatcmpl-, cmpl-, msg_)
  tenshu trace 4f1c0a9e2b7d --json       the whole record as JSON, for scripts

It reads the audit log in $TENSHU_HOME/state.db, where a request appears within a second of
ending. Nothing of the conversation itself is kept there: only where it went and what it cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from tenshu.store import AuditRecord, open_store


def add_arguments(parser) -> None:
    parser.add_argument("id", metavar="ID",
                        help="the request's id: req_..., chatcmpl-..., cmpl-..., msg_... or bare")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def main(args) -> int:
    with open_store() as store:
        record = store.audit.find(args.id)
        if record is None:
            raise ValueError(
                f"no request {args.id.strip()!r} in the audit log (ids come from a response's "
                "request-id header, or are the chatcmpl-/msg_ ids clients show; a request is "
                "logged within a second of ending)")
        key = next((k for k in store.keys.list() if k.id == record.key_id), None)
    if args.json:
        data = asdict(record)
        data["ts"] = record.ts.isoformat()
        data["trace"] = _details(record)
        data["key_name"] = key.name if key else None
        print(json.dumps(data, indent=2))
        return 0
    for label, value in describe(record, key.name if key else None):
        print(f"{label:<10} {value}")
    return 0


def describe(record: AuditRecord, key_name: str | None) -> list[tuple[str, str]]:
    """The record as (label, text) lines, in the order a request happens."""
    details = _details(record)
    if record.key_id is None:
        key = "none (anonymous)"
    else:
        key = f"{key_name} (#{record.key_id})" if key_name else f"#{record.key_id} (deleted)"
    lines = [
        ("request", record.request_id),
        ("when", f"{record.ts.astimezone():%Y-%m-%d %H:%M:%S %Z}"),
        ("key", key),
        ("call", f"{record.protocol} {record.route}"),
        ("model", record.model or "-"),
    ]
    if record.routed is not None or record.tier is not None:
        route = record.routed or "-"
        if record.tier:
            route += f", tier {record.tier}"
        if details.get("reason"):
            route += f" ({details['reason']})"
        lines.append(("route", route))
    if record.score is not None:
        lines.append(("sentinel", f"score {record.score:.3f}"))
    if details.get("private"):
        lines.append(("private", f"kept on this machine: {details['private']}"))
    if memory := details.get("memory"):
        lines.append(("memory", f"{len(memory['chunks'])} chunk(s) from "
                                f"{', '.join(memory['collections'])}: "
                                f"{', '.join(map(str, memory['chunks']))}"))
    attempts = [(str(a.get("backend")), str(a.get("outcome")),
                 format_ms(a["ms"]) if a.get("ms") else "", a.get("error") or "")
                for a in details.get("attempts") or []]
    widths = [max((len(a[column]) for a in attempts), default=0) for column in range(3)]
    for i, (backend, outcome, ms, error) in enumerate(attempts, 1):
        text = (f"{i}. {backend:<{widths[0]}}  {outcome:<{widths[1]}}  {ms:>{widths[2]}}  "
                f"{error}")
        lines.append(("attempts" if i == 1 else "", text.rstrip()))
    if record.backend is not None or record.fallbacks:
        answered = record.backend or "nobody"
        if record.fallbacks:
            answered += f" (after {record.fallbacks} fallback{'s' * (record.fallbacks != 1)})"
        lines.append(("answered", answered))
    status = str(record.status)
    if record.error_kind:
        status += f" {record.error_kind}"
    lines += [
        ("status", status),
        ("tokens", f"{record.input_tokens} in, {record.output_tokens} out"),
        ("cost", format_money(record.cost_usd)),
        ("ttft", format_ms(record.ttft_ms) if record.ttft_ms is not None else "- (no token)"),
        ("duration", format_ms(record.duration_ms)),
    ]
    return lines


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def format_money(usd: float) -> str:
    if usd == 0:
        return "$0"
    return f"${usd:.4f}" if usd >= 0.01 else f"${usd:.6f}"


def _details(record: AuditRecord) -> dict:
    """The trace's JSON (reason, private, attempts); {} for a record from before routing."""
    if not record.trace:
        return {}
    try:
        details = json.loads(record.trace)
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}
