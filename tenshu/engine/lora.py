"""LoRA adapters in the engine, in vLLM's shape: `LLM(model, enable_lora=True, max_loras=...,
max_lora_rank=...)`, then `generate(prompts, params, lora_request=LoRARequest(name, id, path))`.

An adapter is a PEFT LoRA folder (adapter_config.json, adapter_model.safetensors) for the
engine's model. It is loaded once, checked (its base's shapes, its rank against max_lora_rank,
finite weights, no DoRA or other kinds), and fused to the engine's fused projections: q, k and v
adapters become one A ([rq + rk + rv, in]) and one block-diagonal B ([q + k + v, ...]) for
qkv_proj, gate and up likewise for gate_up_proj, with the scaling (alpha / r, or alpha / sqrt(r)
for rsLoRA) folded into B.

A batch may mix the base model and several adapters (as S-LoRA and Punica do): every row goes
through the shared base matmul, and each adapter's rows add their low-rank product x A^T B^T.
The model runner says which rows are whose (`LoRABatch`, set for the length of one forward
pass); a batch without adapters costs nothing extra. Each adapter version salts the prefix
cache's hashes, so K/V blocks are never shared across adapters or versions.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from tenshu.core.errors import InvalidRequestError

# PEFT's module names -> (the engine's fused module, which part of it)
PARTS = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
         "o_proj": ("o_proj", 0), "gate_proj": ("gate_up_proj", 0),
         "up_proj": ("gate_up_proj", 1), "down_proj": ("down_proj", 0)}
_KEY = re.compile(r"(?:.*\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight")


class LoRAError(InvalidRequestError):
    """An adapter that cannot be used with this engine; nothing of it is loaded."""


@dataclass(frozen=True)
class LoRARequest:
    """vLLM's: an adapter's name, a positive integer id unique to it, and its folder."""

    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class LoRAWeights:
    """One adapter, fused to the engine's modules: (layer, module) -> (A [r, in], B [out, r])."""

    request: LoRARequest
    rank: int
    modules: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
    salt: bytes  # the adapter version's identity, for the prefix cache

    @property
    def digest(self) -> str:
        """The sha256 of the adapter's weights file, in hex."""
        return self.salt.removeprefix(b"lora:").hex()


@dataclass
class LoRABatch:
    """Whose rows are whose in one forward pass: (adapter, row indices or None for every row)."""

    groups: list[tuple[LoRAWeights, torch.Tensor | None]] = field(default_factory=list)

    def add(self, key: tuple[int, str], x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out + each adapter's x A^T B^T on its rows (out: the base module's output)."""
        for weights, rows in self.groups:
            ab = weights.modules.get(key)
            if ab is None:
                continue
            a, b = ab
            if rows is None:
                out = out + (x @ a.T) @ b.T
            else:
                out = out.index_add(0, rows, (x.index_select(0, rows) @ a.T) @ b.T)
        return out


current: contextvars.ContextVar[LoRABatch | None] = contextvars.ContextVar(
    "tenshu_lora_batch", default=None)


def load_lora(request: LoRARequest, model, max_rank: int, device, dtype) -> LoRAWeights:
    """Read, check and fuse one PEFT adapter for `model` (a LlamaForCausalLM)."""
    folder = Path(request.lora_path).expanduser()
    if not isinstance(request.lora_int_id, int) or request.lora_int_id < 1:
        raise LoRAError(f"lora_int_id must be a positive integer, not {request.lora_int_id!r}")
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "adapter_model.safetensors"))
    except FileNotFoundError as exc:
        raise LoRAError(f"{folder} is not a PEFT adapter: {exc.filename} is missing") from None
    except (OSError, ValueError) as exc:
        raise LoRAError(f"{folder}: the adapter cannot be read ({exc})") from None
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise LoRAError(f"{folder}: a {kind} adapter; only LoRA is supported")
    if config.get("use_dora"):
        raise LoRAError(f"{folder}: DoRA adapters are not supported")
    rank, alpha = int(config.get("r", 0)), float(config.get("lora_alpha", 0))
    if not 1 <= rank <= max_rank:
        raise LoRAError(f"{folder}: rank {rank} is above max_lora_rank {max_rank}"
                        if rank > max_rank else f"{folder}: rank {rank} is not a LoRA rank")
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    parts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        found = _KEY.fullmatch(key)
        if found is None or found[2] not in PARTS:
            raise LoRAError(f"{folder}: {key} adapts a module this engine does not (only the "
                            f"attention and MLP projections: {', '.join(PARTS)})")
        if not torch.isfinite(tensor).all():
            raise LoRAError(f"{folder}: {key} holds non-finite values")
        parts.setdefault((int(found[1]), found[2]), {})[found[3]] = tensor
    modules = _fuse(folder, parts, model, scale, device, dtype)
    digest = hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).digest()
    return LoRAWeights(request, rank, modules, b"lora:" + digest)


def _fuse(folder: Path, parts, model, scale: float, device, dtype):
    """Each fused module's A and block-diagonal B, checked against the model's shapes."""
    layers = model.model.layers
    fused: dict[tuple[int, str], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for (layer, name), ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise LoRAError(f"{folder}: layer {layer} {name} has lora_{set('AB') - set(ab)} "
                            "missing")
        if layer >= len(layers):
            raise LoRAError(f"{folder}: layer {layer} does not exist in this model "
                            f"({len(layers)} layers): an adapter for another base model")
        target, part = PARTS[name]
        sizes = _part_sizes(layers[layer], target)
        a, b = ab["A"], ab["B"]
        in_features = _module(layers[layer], target).in_features
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or \
                a.shape[1] != in_features or b.shape[0] != sizes[part]:
            raise LoRAError(f"{folder}: layer {layer} {name} has A {tuple(a.shape)} and B "
                            f"{tuple(b.shape)}, which do not fit this model ({in_features} in, "
                            f"{sizes[part]} out): an adapter for another base model")
        fused.setdefault((layer, target), []).append((part, a, b))
    modules = {}
    for (layer, target), pieces in fused.items():
        sizes = _part_sizes(layers[layer], target)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        a = torch.cat([p[1] for p in pieces]).to(device=device, dtype=dtype)  # [R, in]
        b = torch.zeros(sum(sizes), a.shape[0], dtype=dtype, device=device)  # [out, R]
        col = 0
        for part, _, piece in pieces:
            rows = slice(offsets[part], offsets[part] + sizes[part])
            b[rows, col:col + piece.shape[1]] = piece.to(device=device, dtype=dtype) * scale
            col += piece.shape[1]
        modules[(layer, target)] = (a.contiguous(), b.contiguous())
    return modules


def _module(layer, target: str):
    return getattr(layer.self_attn if target in ("qkv_proj", "o_proj") else layer.mlp, target)


def _part_sizes(layer, target: str) -> list[int]:
    attn = layer.self_attn
    if target == "qkv_proj":
        return [attn.q_size, attn.kv_size, attn.kv_size]
    if target == "gate_up_proj":
        return [layer.mlp.intermediate, layer.mlp.intermediate]
    return [_module(layer, target).out_features]


class LoRAManager:
    """The adapters held in memory. Those a request names are loaded on first use (at most
    `max_loras` of them, the least recently used one that no unfinished request uses given up
    first for a new one); those `add`ed ahead of use (a server loading an adapter before it
    serves it, so the step loop never waits on a disk read) are pinned until `remove`d.

    The engine's thread acquires and releases; `add` and `remove` come from other threads, so
    the bookkeeping is under a lock (the reading and fusing of an adapter is not)."""

    def __init__(self, model, max_loras: int, max_rank: int, device, dtype) -> None:
        self.model = model
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.device, self.dtype = device, dtype
        self.loaded: OrderedDict[int, LoRAWeights] = OrderedDict()
        self.users: dict[int, int] = {}  # adapter id -> unfinished requests using it
        self.pinned: set[int] = set()
        self._lock = threading.Lock()

    def add(self, request: LoRARequest) -> LoRAWeights:
        """Load an adapter now and keep it until `remove` (a no-op for one held already)."""
        with self._lock:
            found = self._same(request)
        if found is None:
            found = load_lora(request, self.model, self.max_rank, self.device, self.dtype)
        with self._lock:
            held = self._same(request)  # another thread may have added it meanwhile
            found = held or found
            self.loaded[request.lora_int_id] = found
            self.pinned.add(request.lora_int_id)
        return found

    def remove(self, lora_int_id: int) -> bool:
        """Give an adapter up; False when no adapter has that id. Raises LoRAError while a
        request still runs on it (a server waits for those first)."""
        with self._lock:
            if lora_int_id not in self.loaded:
                return False
            if self.users.get(lora_int_id):
                raise LoRAError(f"adapter {lora_int_id} is in use by "
                                f"{self.users[lora_int_id]} request(s)")
            del self.loaded[lora_int_id]
            self.pinned.discard(lora_int_id)
            self.users.pop(lora_int_id, None)
            return True

    def acquire(self, request: LoRARequest) -> LoRAWeights:
        with self._lock:
            found = self._same(request)
            if found is None:
                if len(self.loaded) >= self.max_loras:
                    idle = next((i for i in self.loaded
                                 if not self.users.get(i) and i not in self.pinned), None)
                    if idle is None:
                        raise LoRAError(f"{self.max_loras} adapters are in use already "
                                        "(max_loras): wait for a request on one of them to "
                                        "finish")
                    del self.loaded[idle]
                found = load_lora(request, self.model, self.max_rank, self.device, self.dtype)
                self.loaded[request.lora_int_id] = found
            self.loaded.move_to_end(request.lora_int_id)
            self.users[request.lora_int_id] = self.users.get(request.lora_int_id, 0) + 1
            return found

    def release(self, weights: LoRAWeights) -> None:
        key = weights.request.lora_int_id
        with self._lock:
            self.users[key] = max(0, self.users.get(key, 0) - 1)

    def _same(self, request: LoRARequest) -> LoRAWeights | None:
        """The adapter held under the request's id; LoRAError if that id is another's."""
        found = self.loaded.get(request.lora_int_id)
        if found is not None and found.request != request:
            raise LoRAError(f"lora_int_id {request.lora_int_id} is {found.request.lora_name!r} "
                            f"({found.request.lora_path}); give another adapter another id")
        return found
