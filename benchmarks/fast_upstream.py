"""An OpenAI-compatible upstream that answers at once: the "model" behind the gateways in
benchmarks/router.py, so that what a benchmark measures is the gateway, not the model.

  python benchmarks/fast_upstream.py --port 9100

It serves POST /v1/chat/completions (a fixed short completion with usage; with "stream": true,
a role chunk, three text chunks, a finish chunk, a usage chunk and [DONE]), GET /v1/models and
GET /health. Every response is built once at import; a request costs a header scan and a write.
It is a bare asyncio Protocol speaking HTTP/1.1 with keep-alive (no framework, no per-request
allocation beyond the parse), so that on a small machine it takes as little CPU from the
gateway under test as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

MODEL = "fast"
TEXT = ["Hello", " from the", " fast upstream."]
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
CREATED = 1_700_000_000


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-fast", "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "".join(TEXT)}}],
        "usage": USAGE,
    }
    return _response("200 OK", json.dumps(body).encode())


def _stream() -> bytes:
    """The SSE answer as one chunked-encoding response: one HTTP chunk per event."""
    def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
        return {"id": "chatcmpl-fast", "object": "chat.completion.chunk", "created": CREATED,
                "model": MODEL, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}], **extra}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in TEXT]
    events.append(chunk({}, "stop"))
    events.append({**chunk({}), "choices": [], "usage": USAGE})
    lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    lines.append(b"data: [DONE]\n\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines) + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n" + body)


COMPLETION = _completion()
STREAM = _stream()
MODELS = _response("200 OK", json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "fast-upstream"}]}).encode())
HEALTH = _response("200 OK", b'{"status":"ok"}')
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')
BAD_REQUEST = _response("400 Bad Request",
                        b'{"error":{"message":"body is not JSON","type":"invalid_request_error"}}')


def answer(method: bytes, path: bytes, body: bytes) -> bytes:
    path = path.split(b"?", 1)[0]
    if method == b"POST" and path.endswith(b"/chat/completions"):
        if b'"stream"' not in body:  # the common case: no JSON parse at all
            return COMPLETION
        try:
            stream = json.loads(body).get("stream") is True
        except ValueError:
            return BAD_REQUEST
        return STREAM if stream else COMPLETION
    if method == b"GET" and path.endswith(b"/models"):
        return MODELS
    if method == b"GET" and path in (b"/health", b"/ready"):
        return HEALTH
    return NOT_FOUND


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as bytes arrive, answer each in order."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : line_end if line_end > 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            request_line = self.buffer[: self.buffer.find(b"\r\n")]
            self.buffer = self.buffer[total:]
            method, path, _ = request_line.split(b" ", 2)
            self.transport.write(answer(method, path, body))
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024)
    print(f"fast upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
