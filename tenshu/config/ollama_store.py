"""Ollama's model store on disk: a model name in, the GGUF blob that holds its weights out.

    <store>/manifests/<host>/<namespace>/<model>/<tag>   JSON: {"layers": [{"mediaType", "digest"}]}
    <store>/blobs/sha256-<hex>                          content-addressed files

`llama3.2` is registry.ollama.ai/library/llama3.2:latest, `user/name:tag` is in the `user`
namespace, and `host/ns/name:tag` is on another registry (Ollama's types/model/name.go). The
layer of mediaType application/vnd.ollama.image.model is the GGUF file; tenshu reads it where
it is and never writes to the store. Pure: the store's folder is given (config reads
$OLLAMA_MODELS), and nothing here starts or asks an Ollama server.

It sits in config beside `parse_model_arg` because it turns what a person wrote (`--model
qwen2.5:7b`) into a file, as paths are; the engine only ever sees that file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PREFIX = "ollama:"

# a part of a name: letters, digits, _ . - (and the host may carry a :port)
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,349}(:[0-9]{1,5})?")


class OllamaModelNotFound(ValueError):
    """A name that is not in the store; the message says where it looked and what is there."""


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    def manifest(self, store: Path) -> Path:
        return store / "manifests" / self.host / self.namespace / self.model / self.tag

    def __str__(self) -> str:
        """The short form Ollama shows: the library's models without host and namespace."""
        short = (f"{self.model}" if (self.host, self.namespace) == (DEFAULT_HOST,
                                                                    DEFAULT_NAMESPACE)
                 else f"{self.namespace}/{self.model}" if self.host == DEFAULT_HOST
                 else f"{self.host}/{self.namespace}/{self.model}")
        return f"{short}:{self.tag}"


@dataclass(frozen=True)
class OllamaModel:
    name: OllamaName
    blob: Path  # the GGUF file, in the store
    size: int  # bytes, as the manifest says


def parse_name(text: str) -> OllamaName | None:
    """`[ollama:][[host/]namespace/]model[:tag]` as an OllamaName; None if it is not one."""
    text = text.removeprefix(PREFIX)
    path, colon, tag = text.rpartition(":") if ":" in text.rsplit("/", 1)[-1] else (text, "", "")
    parts = path.split("/")
    if not 1 <= len(parts) <= 3 or (colon and not _PART.fullmatch(tag)):
        return None
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    if len(parts) == 3 and not _HOST.fullmatch(host):
        return None
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    if not all(_PART.fullmatch(p) for p in (namespace, parts[-1])):
        return None
    return OllamaName(host, namespace, parts[-1], tag or DEFAULT_TAG)


def resolve(store: Path, text: str) -> OllamaModel:
    """The model `text` names in the store at `store`: its GGUF blob, checked to exist."""
    name = parse_name(text)
    if name is None:
        raise ValueError(f"{text!r} is not an Ollama model name (like llama3.2, qwen2.5:7b or "
                         "user/model:tag)")
    manifest = _find_manifest(store, name)
    if manifest is None:
        there = [str(m.name) for m in list_models(store)]
        listing = (f"it has {', '.join(there[:8])}{', ...' if len(there) > 8 else ''}" if there
                   else "it has no models")
        raise OllamaModelNotFound(
            f"Ollama model {name} is not in the store at {store} ({listing}); fetch it with "
            f"`ollama pull {name}`, or a GGUF or checkpoint from Hugging Face with `tenshu pull "
            "REPO_ID` (set OLLAMA_MODELS if Ollama keeps its models elsewhere)")
    return _read_manifest(store, name, manifest)


def list_models(store: Path) -> list[OllamaModel]:
    """Every model in the store whose weights are there, by name; unreadable manifests (not a
    model, or half pulled) are left out."""
    root = store / "manifests"
    found = []
    for manifest in sorted(root.glob("*/*/*/*")):
        host, namespace, model, tag = manifest.relative_to(root).parts
        try:
            found.append(_read_manifest(store, OllamaName(host, namespace, model, tag), manifest))
        except ValueError:
            continue
    return found


def _find_manifest(store: Path, name: OllamaName) -> Path | None:
    """Its manifest: as written, else in any case (Ollama matches names case-insensitively)."""
    exact = name.manifest(store)
    if exact.is_file():
        return exact
    folder = store / "manifests"
    for part in (name.host, name.namespace, name.model, name.tag):
        match = ([p for p in folder.iterdir() if p.name.lower() == part.lower()]
                 if folder.is_dir() else [])
        if not match:
            return None
        folder = match[0]
    return folder if folder.is_file() else None


def _read_manifest(store: Path, name: OllamaName, manifest: Path) -> OllamaModel:
    try:
        layers = json.loads(manifest.read_text())["layers"]
        layer = next(lay for lay in layers if lay.get("mediaType") == MODEL_MEDIA_TYPE)
        algorithm, _, digest = layer["digest"].partition(":")
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ValueError(f"Ollama manifest {manifest} has no model layer ({exc!r}); "
                         f"`ollama pull {name}` again") from None
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"Ollama manifest {manifest}: unexpected digest {layer['digest']!r}")
    blob = store / "blobs" / f"sha256-{digest}"
    if not blob.is_file():
        raise OllamaModelNotFound(f"Ollama model {name}: its weights {blob} are missing (a pull "
                                  f"that did not finish?); `ollama pull {name}` again")
    return OllamaModel(name, blob, int(layer.get("size") or blob.stat().st_size))
