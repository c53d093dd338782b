"""The two places `tenshu chat` can talk to: an engine in this process, or a running server
(through its OpenAI-compatible API, streamed)."""

from __future__ import annotations

import json
import sys

import httpx

from tenshu.cli.run import make_engine, sampling_params, stream
from tenshu.config import DEFAULT_MODEL_NAME

MIN_REPLY_TOKENS = 32  # room kept free for the answer when old turns are dropped


def _dropped() -> None:
    print("[the oldest turn was dropped to fit the context]", file=sys.stderr)


class LocalSession:
    def __init__(self, model: str | None, args):
        self.args = args
        self.switch(model)

    def switch(self, model: str | None) -> None:
        self.args.model = model
        self.engine = make_engine(self.args)
        if self.engine.tokenizer is None or not self.engine.tokenizer.chat_template:
            raise ValueError(f"{model} has no chat template; use `tenshu run --raw` instead")
        self.model = model or DEFAULT_MODEL_NAME

    def models(self) -> list[str]:
        return [self.model]

    def reply(self, start: list[dict], messages: list[dict]) -> str | None:
        while True:
            ids = self.engine.apply_chat_template(start + messages)
            if len(ids) + MIN_REPLY_TOKENS <= self.engine.max_model_len:
                break
            if len(messages) <= 1:
                print(f"[that message alone does not fit the {self.engine.max_model_len}-token "
                      "context]", file=sys.stderr)
                return None
            del messages[:2]
            _dropped()
        text, _ = stream(self.engine, ids, sampling_params(self.args))
        return text


class RemoteSession:
    def __init__(self, url: str, key: str | None, model: str | None, args):
        self.args = args
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=url.rstrip("/") + "/v1", headers=headers,
                                   timeout=httpx.Timeout(10, read=600))
        available = self.models()
        self.model = model or (available[0] if available else DEFAULT_MODEL_NAME)

    def switch(self, model: str) -> None:
        if model not in self.models():
            raise ValueError(f"no model {model!r} on the server; /model lists them")
        self.model = model

    def models(self) -> list[str]:
        try:
            response = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise ValueError(f"cannot reach {self.client.base_url}: {exc}") from exc
        _raise_for(response)
        return [m["id"] for m in response.json()["data"]]

    def reply(self, start: list[dict], messages: list[dict]) -> str | None:
        body = {"model": self.model, "stream": True, "max_tokens": self.args.max_tokens,
                "temperature": self.args.temperature, "top_p": self.args.top_p}
        if self.args.seed is not None:
            body["seed"] = self.args.seed
        try:
            while True:
                with self.client.stream("POST", "/chat/completions",
                                        json={**body, "messages": start + messages}) as response:
                    if response.status_code == 400:
                        response.read()
                        error = response.json().get("error", {})
                        if error.get("code") == "context_length_exceeded" and len(messages) > 1:
                            del messages[:2]
                            _dropped()
                            continue
                    _raise_for(response)
                    return _print_stream(response)
        except httpx.HTTPError as exc:
            raise ValueError(f"lost the server at {self.client.base_url}: {exc}") from exc


def _print_stream(response: httpx.Response) -> str:
    pieces, finish = [], None
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            print(f"\n[error: {chunk['error'].get('message')}]", file=sys.stderr)
            break
        for choice in chunk.get("choices", []):
            text = choice.get("delta", {}).get("content") or ""
            sys.stdout.write(text)
            sys.stdout.flush()
            pieces.append(text)
            finish = choice.get("finish_reason") or finish
    sys.stdout.write("\n")
    if finish == "length":
        print("[stopped at the token limit]", file=sys.stderr)
    return "".join(pieces)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    raise ValueError(f"the server answered {response.status_code}: {message}")
