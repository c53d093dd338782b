"""`tenshu ingest` and `tenshu memory`, run as a person runs them: in a subprocess, on a
temporary home. Includes an ingest killed with SIGKILL midway, then run again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

TIMEOUT = 300


def tenshu(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenshu", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                           **(env or {})})


def test_ingest_then_search_from_the_command_line(home, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ops.md").write_text("# Ops\n\n## Keys\n\nRotate the API keys every 90 days.\n")
    (notes / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    done = tenshu("ingest", str(notes), "--collection", "notes", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["added"] == 1 and summary["failed"][0]["source"].endswith("bad.pdf")

    found = tenshu("memory", "search", "how often are keys rotated", "-c", "notes", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["source"] == str(notes / "ops.md")
    assert set(hits[0]) >= {"source", "title", "section", "page", "text", "score", "chunk_id"}
    assert hits[0]["section"] == "Ops > Keys"

    listed = tenshu("memory", "list").stdout
    assert "notes" in listed and "all-minilm-l6-v2" in listed
    documents = tenshu("memory", "list", "notes").stdout
    assert "ready" in documents and "failed" in documents
    missing = tenshu("memory", "search", "x", "-c", "nope")
    assert missing.returncode == 1 and "no collection named 'nope'" in missing.stderr
    assert "deleted notes: 2 documents" in tenshu("memory", "delete", "notes").stdout


def counts(db) -> dict:
    with sqlite3.connect(db) as conn:
        q = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {"documents": q("SELECT count(*) FROM documents"),
                "ready": q("SELECT count(*) FROM documents WHERE status = 'ready'"),
                "sources": q("SELECT count(DISTINCT source) FROM documents"),
                "chunks": q("SELECT count(*) FROM chunks"),
                "expected": q("SELECT coalesce(sum(chunks), 0) FROM documents"),
                "vectors": q("SELECT count(*) FROM chunk_vectors"),
                "fts": q("SELECT count(*) FROM chunks_fts")}


def test_an_ingest_killed_midway_resumes_without_duplicates(home, tmp_path):
    # small chunks: many of them (several transactions' worth), each quick to embed
    (home / "tenshu.toml").write_text("[memory]\nchunk_tokens = 24\noverlap_tokens = 0\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    files = 40
    for i in range(files):
        paragraphs = [f"Document {i}, part {p}: " + " ".join(f"word{i}x{p}x{w}" for w in range(8))
                      for p in range(6)]
        (tree / f"doc{i:03}.md").write_text(f"# Doc {i}\n\n" + "\n\n".join(paragraphs))
    proc = subprocess.Popen([sys.executable, "-m", "tenshu", "ingest", str(tree), "-c", "t"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = home / "state.db"
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if counts(db)["ready"] >= 3:
                    break
            except sqlite3.Error:
                pass  # not made yet
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail("the ingest finished before it could be killed; give it more files")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    midway = counts(db)
    assert 0 < midway["ready"] < files
    # what was written is whole: every chunk with its vector and its words indexed
    assert midway["chunks"] == midway["expected"] == midway["vectors"] == midway["fts"]

    again = tenshu("ingest", str(tree), "-c", "t", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["unchanged"] == midway["ready"]
    assert summary["added"] == files - midway["ready"]
    final = counts(db)
    assert final["documents"] == final["sources"] == final["ready"] == files
    assert final["chunks"] == final["expected"] == final["vectors"] == final["fts"]
    hits = json.loads(tenshu("memory", "search", "word7x2x5", "-c", "t", "--json").stdout)
    assert hits[0]["source"] == str(tree / "doc007.md")
    assert len({h["chunk_id"] for h in hits}) == len(hits)
