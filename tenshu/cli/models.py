"""List the models there are: on disk, in Ollama's store, and on the running server.

  tenshu models                          $TENSHU_HOME/models, Ollama's store, and what the
                                         local server serves (if one is running)
  tenshu models --url http://host:7311   what that server serves (--key or TENSHU_API_KEY)

SOURCE is disk (checkpoint directories and .gguf files in $TENSHU_HOME/models, where `tenshu
pull` puts them), ollama (what `ollama pull` stored under $OLLAMA_MODELS, else ~/.ollama/models)
or served. FORMAT is the weights' type: safetensors and its dtype, or GGUF and its quantization
(Q4_K_M, Q8_0, F16, ...). Any NAME of disk or ollama can be served: tenshu serve --model NAME.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tenshu.cli.table import print_table
from tenshu.config import (
    DEFAULT_PORT,
    api_key_from_env,
    load_server_settings,
    models_dir,
    ollama_models_dir,
)
from tenshu.config.ollama_store import list_models
from tenshu.core.weights import gguf_format, safetensors_format

HEADER = ("NAME", "SOURCE", "FORMAT", "SIZE", "PATH")


def add_arguments(parser) -> None:
    parser.add_argument("--url", help="the tenshu server whose models to list (default: this "
                                      "machine's, at the port tenshu.toml gives)")
    parser.add_argument("--key", help="its API key (default: TENSHU_API_KEY)")


def main(args) -> int:
    rows = [*_on_disk(models_dir()), *_in_ollama(ollama_models_dir()),
            *_served(args.url or _local_url(), args.key or api_key_from_env())]
    if rows:
        print_table(HEADER, rows)
    else:
        print(f"no models in {models_dir()} or {ollama_models_dir()}; `tenshu pull REPO_ID` "
              "fetches one from Hugging Face", file=sys.stderr)
    return 0


def _on_disk(root: Path) -> list[tuple[str, ...]]:
    rows = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_file() and path.suffix == ".gguf":
            rows.append((path.stem, "disk", gguf_format(path), human_size(path.stat().st_size),
                         str(path)))
        elif path.is_dir() and (path / "config.json").is_file():
            files = [f for f in path.rglob("*") if f.is_file() and ".cache" not in f.parts]
            rows.append((path.name, "disk", safetensors_format(path),
                         human_size(sum(f.stat().st_size for f in files)), str(path)))
        elif path.is_dir() and (ggufs := sorted(path.glob("*.gguf"))):
            for file in ggufs:  # a pull of GGUF files alone: one name each
                name = path.name if len(ggufs) == 1 else f"{path.name}/{file.name}"
                rows.append((name, "disk", gguf_format(file),
                             human_size(file.stat().st_size), str(file)))
    return rows


def _in_ollama(store: Path) -> list[tuple[str, ...]]:
    return [(str(m.name), "ollama", gguf_format(m.blob), human_size(m.size), str(m.blob))
            for m in list_models(store)]


def _served(url: str, key: str | None) -> list[tuple[str, ...]]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url.rstrip("/") + "/v1/models", headers=headers, timeout=3)
    except httpx.HTTPError:
        print(f"no server at {url}", file=sys.stderr)
        return []
    if response.status_code == 401:
        print(f"the server at {url} wants an API key: --key or TENSHU_API_KEY", file=sys.stderr)
        return []
    if response.status_code != 200:
        print(f"the server at {url} answered {response.status_code} to /v1/models",
              file=sys.stderr)
        return []
    return [(m["id"], "served", "-", "-", url) for m in response.json().get("data", [])]


def _local_url() -> str:
    try:
        settings = load_server_settings()
        host, port = settings.host, settings.port
    except ValueError as exc:  # a broken tenshu.toml should not hide what is on disk
        print(f"tenshu models: {exc}; trying the default port", file=sys.stderr)
        host, port = "127.0.0.1", DEFAULT_PORT
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def human_size(size: float) -> str:
    """In powers of 1000, as Ollama and Hugging Face show sizes."""
    if size < 1000:
        return f"{size:.0f} B"
    units = ["KB", "MB", "GB"]
    size /= 1000
    while size >= 1000 and len(units) > 1:
        size /= 1000
        units.pop(0)
    return f"{size:.1f} {units[0]}"
