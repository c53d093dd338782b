"""`tenshu pull` against a Hugging Face Hub on loopback that speaks the part of the Hub's API
that huggingface_hub's snapshot_download uses (the revision's commit, the file tree, and HEAD /
GET of each file with its commit, ETag and size, Range requests included)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.api.live import free_port

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# huggingface_hub writes what it receives in 10 MiB chunks, and resumes from the last whole one
CHUNK = 10 * 1024 * 1024
BIG = CHUNK + 2 * 1024 * 1024


class FakeHub(ThreadingHTTPServer):
    """repos: {repo_id: {filename: bytes}}. `drop_once`: {file: offset}, a file whose first GET
    breaks off at that byte, as a flaky connection does. `requests` records (method, path,
    Range)."""

    daemon_threads = True

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.drop_once: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        path = self.path.split("?")[0]
        self.server.requests.append((self.command, path, self.headers.get("Range")))
        for repo_id, files in self.server.repos.items():
            if path in (f"/api/models/{repo_id}/revision/main", f"/api/models/{repo_id}"):
                return self._json({"id": repo_id, "sha": COMMIT,
                                   "siblings": [{"rfilename": f} for f in files]})
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                return self._json([{"type": "file", "path": f, "size": len(data),
                                    "oid": hashlib.sha1(data).hexdigest()}
                                   for f, data in files.items()])
            prefix = f"/{repo_id}/resolve/"
            if path.startswith(prefix):
                _, _, filename = path.removeprefix(prefix).partition("/")
                if filename in files:
                    return self._file(filename, files[filename], head)
        self._json({"error": "Repository not found"}, status=404,
                   headers={"X-Error-Code": "RepoNotFound"})

    def _json(self, body, status: int = 200, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _file(self, filename: str, data: bytes, head: bool) -> None:
        start = 0
        if (asked := self.headers.get("Range")) and asked.startswith("bytes="):
            start = int(asked.removeprefix("bytes=").split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if filename in self.server.drop_once:  # part of the body, then the connection is gone
            self.wfile.write(data[start:self.server.drop_once.pop(filename)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def hub(checkpoint):
    source = checkpoint("qwen3")
    files = {p.name: p.read_bytes() for p in sorted(source.iterdir()) if p.is_file()}
    files["README.md"] = b"# tiny\n"  # not what serving needs: left on the Hub
    gguf = {"tiny-Q8_0.gguf": b"GGUF" + bytes(64), "tiny-F16.gguf": b"GGUF" + bytes(96),
            "README.md": b"# tiny gguf\n"}
    big = {"big.gguf": b"GGUF" + bytes(range(256)) * (BIG // 256)}
    server = FakeHub({"org/tiny": files, "org/tiny-GGUF": gguf, "org/big-GGUF": big})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def pull(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(TENSHU_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"),
               HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    return subprocess.run([sys.executable, "-m", "tenshu", "pull", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_pull_downloads_what_serving_needs_and_says_how_to_serve_it(tmp_path, hub):
    result = pull(tmp_path, hub.url, "org/tiny")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "home" / "models" / "tiny"
    for name, data in hub.repos["org/tiny"].items():
        if name != "README.md":
            assert (target / name).read_bytes() == data, name
    assert not (target / "README.md").exists()
    assert "tenshu serve --model tiny" in result.stderr
    # pulled again: nothing is downloaded twice
    hub.requests.clear()
    assert pull(tmp_path, hub.url, "org/tiny").returncode == 0
    assert not [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]


def test_a_transfer_that_breaks_off_goes_on_from_where_it_stopped(tmp_path, hub):
    hub.drop_once["big.gguf"] = CHUNK + 1000
    result = pull(tmp_path, hub.url, "org/big-GGUF")
    assert result.returncode == 0, result.stderr
    data = hub.repos["org/big-GGUF"]["big.gguf"]
    assert (tmp_path / "home" / "models" / "big-GGUF" / "big.gguf").read_bytes() == data
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/big.gguf")]
    assert ranges == [None, f"bytes={CHUNK}-"]  # not from the start


def test_a_gguf_repository_needs_a_choice_of_quantization(tmp_path, hub):
    result = pull(tmp_path, hub.url, "org/tiny-GGUF")
    assert result.returncode == 1
    assert "2 GGUF files" in result.stderr and "--include" in result.stderr
    result = pull(tmp_path, hub.url, "org/tiny-GGUF", "--include", "*Q8_0.gguf")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "home" / "models" / "tiny-GGUF"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["tiny-Q8_0.gguf"]
    assert "tenshu serve --model tiny-GGUF" in result.stderr


def test_an_unknown_repository_and_an_unreachable_hub_are_clear_errors(tmp_path, hub):
    result = pull(tmp_path, hub.url, "org/nothing")
    assert result.returncode == 1 and "no repository org/nothing" in result.stderr
    result = pull(tmp_path, f"http://127.0.0.1:{free_port()}", "org/tiny")
    assert result.returncode == 1 and "cannot reach the Hub" in result.stderr
    assert "Traceback" not in result.stderr
