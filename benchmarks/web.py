"""The web UI's speed: from Enter to the first token painted in the chat page, side by side with
the API's own time to first token in the same run; and the server time of the chat page with
200 conversations in its list.

  python benchmarks/web.py                 # 40 rounds each (a few minutes on 2 cores)
  python benchmarks/web.py --rounds 10     # quicker

`tenshu serve` runs in a process of its own (loopback, no keys: the browser goes in as the local
owner) on the built-in model. Debian's Chromium, driven by Playwright, opens /chat for each
round, types the same prompt and presses Enter; the page's script marks `tenshu-first-token`
when the first piece of the answer has been rendered into the page (in the animation frame that
paints it), and the time from the Enter key's event to that mark is the UI's time. Taking turns
with it, the API's own time: the same request (the same body and headers: streamed, recorded as
a new conversation) sent by httpx, from sending to the first content delta read. Reported: the
median and p90 of both, and the median difference (goal: at most 50 ms).

Then 200 conversations of 6 turns each are written for the owner, and GET /chat/{one of them}
(the list of 200 and a conversation) is timed from httpx, over loopback (goal: at most 100 ms
at the median; p95 shown too).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenshu.store import open_store  # noqa: E402
from tenshu.store.conversations import TurnRecord, write_turns  # noqa: E402
from tenshu.store.sql import begin_write  # noqa: E402
from tests.api.process import running  # noqa: E402

PROMPT = "Tell me about the castle keep"
BODY = {"model": "tenshu-tiny", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": PROMPT}]}
# Records when the Enter key is pressed, before the page's own handler sees it.
WATCH_ENTER = """
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter") window.__enter = performance.now();
}, { capture: true });
"""


def api_ttft(client: httpx.Client) -> float:
    """ms from sending the request to reading its first content delta (on a kept-alive
    connection, as the browser's)."""
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=BODY,
                       headers={"x-tenshu-conversation": "new"}) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    return (time.perf_counter() - start) * 1000
    raise RuntimeError("no content in the answer")


MARKS = ("tenshu-send", "tenshu-fetch", "tenshu-response", "tenshu-first-delta", "tenshu-first-token")


def ui_ttft(page, base: str, stages: dict[str, list[float]]) -> float:
    """ms from the Enter key to the first token painted in the chat page; `stages` gets the
    time from the Enter key to each of the page's marks."""
    page.goto(base + "/chat")
    page.fill("#prompt", PROMPT)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#send:not(.hidden)", timeout=120_000)  # let it finish
    # (read after: the page's CSP forbids the eval that Playwright's wait_for_function uses)
    marks = page.evaluate(
        "Object.fromEntries(performance.getEntriesByType('mark')"
        ".map(m => [m.name, m.startTime]).concat([['enter', window.__enter]]))")
    for name in MARKS:
        stages.setdefault(name, []).append(marks[name] - marks["enter"])
    return marks["tenshu-first-token"] - marks["enter"]


def seed(home: Path, conversations: int = 200, turns: int = 6) -> str:
    """`conversations` conversations of `turns` turns for the owner; the id of the newest."""
    with open_store(home / "state.db") as store:
        owner = store.users.owner()
        records = []
        for c in range(conversations):
            cid = f"conv_{c:024x}"
            for t in range(turns):
                records.append(TurnRecord(
                    id=f"turn_{c:012x}{t:012x}", conversation_id=cid, owner_id=owner.id,
                    request_id=f"req_{c:012x}{t:012x}", model="tenshu-tiny",
                    messages=[{"role": "user", "content": [{"type": "text", "text":
                                                            f"question {t} of chat {c} " * 8}]}],
                    completion=[{"role": "assistant", "content": [{"type": "text", "text":
                                ("An answer with `code` and **bold**. " * 12)}]}],
                    state_hash=f"{c}-{t}", new=t == 0, output_tokens=120, duration_ms=900.0))
        with begin_write(store.engine) as conn:
            write_turns(conn, records)
        return f"conv_{conversations - 1:024x}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Debian's chromium (apt-get install chromium)")
    home = Path(tempfile.mkdtemp(prefix="tenshu-bench-web-"))
    with running(home) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.add_init_script(WATCH_ENTER)
        client = httpx.Client(base_url=server.url, timeout=120)
        stages: dict[str, list[float]] = {}
        for _ in range(3):  # warm up both paths
            api_ttft(client)
            ui_ttft(page, server.url, {})
        api, ui = [], []
        for i in range(args.rounds):
            if i % 2:
                ui.append(ui_ttft(page, server.url, stages))
                api.append(api_ttft(client))
            else:
                api.append(api_ttft(client))
                ui.append(ui_ttft(page, server.url, stages))
        browser.close()

        newest = seed(home)
        client.get("/chat")  # the local owner's session
        assert client.get(f"/chat/{newest}").text.count('class="title"') == 200
        page_ms = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            response = client.get(f"/chat/{newest}")
            page_ms.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200

    print(f"time to first token, {args.rounds} rounds each, taking turns (ms)")
    print("| | median | p90 |\n|---|---:|---:|")
    print(f"| API (httpx, first content delta read) | {statistics.median(api):.1f} | "
          f"{percentile(api, 0.9):.1f} |")
    print(f"| web UI (Enter to first token painted) | {statistics.median(ui):.1f} | "
          f"{percentile(ui, 0.9):.1f} |")
    print(f"| difference of the medians | {statistics.median(ui) - statistics.median(api):+.1f}"
          " | |")
    print("\nthe web UI's time, from the Enter key to each mark of the page (median ms)")
    for name in MARKS:
        print(f"  {name}: {statistics.median(stages[name]):.1f}")
    print(f"\nGET /chat/<conversation> with 200 conversations listed: median "
          f"{statistics.median(page_ms):.1f} ms, p95 {percentile(page_ms, 0.95):.1f} ms")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
