"""`tenshu train tiny`: a chat model built from nothing on this machine.

corpus.py writes the conversations, dataset.py trains the tokenizer and cuts batches, this module
trains a Llama-architecture decoder (RoPE, RMSNorm, SwiGLU, GQA: transformers' LlamaForCausalLM,
so the result is a standard checkpoint) and exports it; evaluate.py measures what came out.

The run lives in one output directory. `tenshu-train.json` marks it as a tenshu run and holds
the recipe and the results; `checkpoint/state.pt` is replaced atomically every few steps, so an
interrupted run (Ctrl-C, SIGTERM, even SIGKILL) resumes from its last checkpoint with `--resume`
and sees exactly the batches it would have seen. The model files appear only at the end, each
moved into place whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tenshu.engine import LLM
from tenshu.learn import corpus, dataset, evaluate, report

MARKER = "tenshu-train.json"
CHECKPOINT = Path("checkpoint") / "state.pt"
# Everything a run writes into its directory (and all that --overwrite removes).
RUN_FILES = (
    MARKER, "checkpoint", ".export", "config.json", "generation_config.json", "model.safetensors",
    "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
    "loss.png", "eval.json", "README.md",
)


@dataclass(frozen=True)
class ModelSize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int


SIZES = {
    # seconds on a laptop: for tests and for trying the pipeline
    "micro": ModelSize(hidden=64, layers=2, heads=4, kv_heads=2, ffn=192, vocab=512, context=384),
    # the shipped default: 3.5M parameters, ~4,800 training tokens/s on 2 CPU cores
    "tiny": ModelSize(hidden=256, layers=4, heads=8, kv_heads=4, ffn=704, vocab=2048, context=512),
    # GuppyLM-sized (10M); wants a GPU or more minutes
    "small": ModelSize(hidden=384, layers=6, heads=6, kv_heads=2, ffn=1024, vocab=4096, context=512),
}


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that decides what a run produces. `steps` fixes the step count; without it the
    count is calibrated so that training takes about `minutes` on this machine."""

    size: str = "tiny"
    seed: int = 0
    conversations: int = 20_000
    heldout_fraction: float = 0.05
    minutes: float = 8.0
    steps: int | None = None
    batch_tokens: int = 8192
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    eval_every: int = 50

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.conversations < 20:
            raise ValueError(f"conversations must be >= 20, got {self.conversations}")
        if not 0 < self.heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.steps is None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        for name in ("checkpoint_every", "eval_every", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def model_size(self) -> ModelSize:
        return SIZES[self.size]


@dataclass
class TrainState:
    step: int = 0
    total_steps: int | None = None
    tokens: int = 0
    seconds: float = 0.0
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    heldout_loss: list[tuple[int, float]] = field(default_factory=list)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; `--resume` continues it."""

    def __init__(self, out: Path, step: int):
        super().__init__(f"interrupted at step {step}; the checkpoint in {out} is saved, "
                         f"continue with: tenshu train tiny --out {out} --resume")
        self.step = step


# --- the output directory ------------------------------------------------------------------


def read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def prepare_out(out: Path, recipe: TinyRecipe, resume: bool, overwrite: bool) -> TinyRecipe:
    """Claim `out` for a run and return the recipe to use. Never touches a directory that is not
    a tenshu training run; never discards a run unless told to."""
    marker = read_marker(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    occupied = out.exists() and any(out.iterdir())
    if occupied and marker is None:
        raise FileExistsError(
            f"{out} exists and is not a tenshu training run; refusing to write into it "
            "(choose a new or empty --out)"
        )
    if marker is not None and resume:
        return TinyRecipe(**marker["recipe"])  # a run continues with the recipe it started with
    if marker is not None and not overwrite:
        raise FileExistsError(
            f"{out} holds a tenshu training run ({marker.get('status', 'unknown')}); "
            "pass --resume to continue it or --overwrite to start over"
        )
    if resume and marker is None:
        raise FileNotFoundError(f"nothing to resume: {out} holds no tenshu training run")
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, {"status": "training", "recipe": dataclasses.asdict(recipe)})
    return recipe


def write_marker(out: Path, content: dict) -> None:
    atomic_write(out / MARKER, json.dumps(content, indent=2).encode())


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- the model -----------------------------------------------------------------------------


def build_model(size: ModelSize, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        intermediate_size=size.ffn,
        max_position_embeddings=size.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,  # a quarter of the parameters at this size; tying costs nothing
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def make_optimizer(model: torch.nn.Module, recipe: TinyRecipe) -> torch.optim.AdamW:
    # No weight decay on norm gains (1-D); the tied embedding matrix is decayed like any matrix.
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": recipe.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8)


def learning_rate(recipe: TinyRecipe, step: int, total: int) -> float:
    """Linear warmup, then a cosine decay to `min_lr` at the last step."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    span = max(1, total - recipe.warmup_steps)
    progress = min(1.0, (step - recipe.warmup_steps) / span)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def heldout_loss(model: LlamaForCausalLM, batches: list[dataset.Batch]) -> float:
    """Mean next-token cross-entropy (nats) over every held-out token."""
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        logits = model(input_ids=b.input_ids).logits[:, :-1].float()
        labels = b.labels[:, 1:]
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
        ).item()
        count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


# --- the run -------------------------------------------------------------------------------


@dataclass
class PreparedData:
    tokenizer: PreTrainedTokenizerFast
    train_rows: list[list[int]]
    heldout_rows: list[list[int]]
    stats: dict


def prepare_data(recipe: TinyRecipe, out: Path, log: Callable[[str], None]) -> PreparedData:
    """Generate the corpus, split it, train (or, when resuming, reload) the tokenizer."""
    conversations = corpus.generate_corpus(recipe.conversations, seed=recipe.seed)
    n_heldout = max(1, round(len(conversations) * recipe.heldout_fraction))
    train_convs, heldout_convs = conversations[n_heldout:], conversations[:n_heldout]
    if (out / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    else:
        # The tokenizer sees only the training split, like the model.
        texts = [m["role"] + "\n" + m["content"] for c in train_convs for m in c.messages]
        tokenizer = dataset.train_tokenizer(texts, recipe.model_size.vocab)
        tokenizer.save_pretrained(out)
    context = recipe.model_size.context
    train_rows, d1 = dataset.encode(tokenizer, [c.messages for c in train_convs], context)
    heldout_rows, d2 = dataset.encode(tokenizer, [c.messages for c in heldout_convs], context)
    n_tokens = sum(map(len, train_rows))
    log(f"corpus: {len(conversations):,} conversations ({len(train_rows):,} train, "
        f"{len(heldout_rows):,} held out; {d1 + d2} longer than {context} tokens dropped), "
        f"{n_tokens:,} training tokens; tokenizer: {len(tokenizer):,} tokens")
    stats = corpus.describe(conversations) | {"too_long_dropped": d1 + d2}
    return PreparedData(tokenizer, train_rows, heldout_rows, stats)


def train_tiny(
    out: Path,
    recipe: TinyRecipe | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the whole recipe into `out`; return the results also written to tenshu-train.json.
    Raises TrainingInterrupted (after checkpointing) on SIGINT/SIGTERM."""
    out = Path(out)
    recipe = prepare_out(out, recipe or TinyRecipe(), resume, overwrite)
    marker = read_marker(out) or {}
    if marker.get("status") == "done":
        log(f"{out} already holds a finished run; nothing to resume")
        return marker["results"]
    torch.manual_seed(recipe.seed)
    data = prepare_data(recipe, out, log)
    model = build_model(recipe.model_size, data.tokenizer, recipe.seed)
    optimizer = make_optimizer(model, recipe)
    state = TrainState(total_steps=recipe.steps)
    if resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out, model, optimizer)
        log(f"resuming from step {state.step}/{state.total_steps} (checkpoint in {out / CHECKPOINT})")
    n_params = sum(p.numel() for p in model.parameters())
    s = recipe.model_size
    log(f"model: LlamaForCausalLM, {n_params / 1e6:.2f}M parameters ({s.layers} layers, hidden "
        f"{s.hidden}, {s.heads} heads / {s.kv_heads} KV heads, context {s.context})")
    eval_batches = dataset.fixed_batches(data.heldout_rows, recipe.batch_tokens, data.tokenizer.pad_token_id)
    quick_eval = eval_batches[: max(1, len(eval_batches) // 4)]

    with _stop_on_signals() as stop:
        _train_loop(out, recipe, model, optimizer, state, data, quick_eval, stop, progress, log)
        if stop.requested:
            save_checkpoint(out, model, optimizer, state)
            raise TrainingInterrupted(out, state.step)

    save_checkpoint(out, model, optimizer, state)
    final = heldout_loss(model, eval_batches)
    state.heldout_loss.append((state.step, final))
    export(model, data.tokenizer, out)
    results = {
        "parameters": n_params,
        "steps": state.step,
        "train_tokens": state.tokens,
        "train_seconds": round(state.seconds, 1),
        "tokens_per_second": round(state.tokens / max(state.seconds, 1e-9)),
        "heldout_loss": round(final, 4),
        "heldout_perplexity": round(math.exp(final), 3),
        "heldout_tokens": sum(len(r) for r in data.heldout_rows),
        "corpus": data.stats,
        "train_loss": state.train_loss,
        "heldout_curve": state.heldout_loss,
    }
    log(f"held-out loss {final:.3f} (perplexity {math.exp(final):.2f}) after {state.step} steps, "
        f"{state.tokens:,} tokens in {state.seconds / 60:.1f} min")
    report.plot_loss(results, out / "loss.png")
    if evaluate:
        results["eval"] = run_evaluation(out, recipe, results, log)
    write_marker(out, {"status": "done", "recipe": dataclasses.asdict(recipe), "results": results})
    return results


def run_evaluation(out: Path, recipe: TinyRecipe, results: dict, log: Callable[[str], None]) -> dict:
    """Greedy and sampled passes over the held-out cases; eval.json and the model card."""
    llm = LLM(str(out), max_num_seqs=64, kv_cache_memory_gib=0.5)
    evals = [evaluate.evaluate_chat(llm, temperature=0.0),
             evaluate.evaluate_chat(llm, temperature=0.7, seed=recipe.seed)]
    evals[0]["corpus_on_topic"] = evaluate.corpus_on_topic(llm, recipe.seed)
    atomic_write(out / "eval.json", json.dumps(evals, indent=2).encode())
    atomic_write(out / "README.md",
                 report.model_card(dataclasses.asdict(recipe), results, evals).encode())
    summary = {}
    for e in evals:
        key = "greedy" if e["temperature"] == 0 else f"t{e['temperature']:g}"
        summary[key] = {k: e[k] for k in ("replies", "ends_turn", "in_persona", "no_repetition",
                                          "passed", "single_turn_pass", "multi_turn_pass",
                                          "on_topic")}
        log(f"evaluation ({key}): {e['passed']:.0%} of {e['replies']} held-out replies pass; "
            f"single-turn {e['single_turn_pass']:.0%}, three-turn {e['multi_turn_pass']:.0%}; "
            f"on topic {e['on_topic']:.0%}")
    summary["corpus_on_topic"] = evals[0]["corpus_on_topic"]
    log(f"on topic for fresh chats in the corpus's own wordings: {summary['corpus_on_topic']:.0%}")
    return summary


def _train_loop(out, recipe, model, optimizer, state, data, quick_eval, stop, progress, log):
    pad = data.tokenizer.pad_token_id
    batches = dataset.batch_stream(data.train_rows, recipe.batch_tokens, recipe.seed, pad, state.step)
    bar = tqdm(total=state.total_steps, initial=state.step, unit="step", disable=not progress,
               dynamic_ncols=True, desc="training")
    budget = recipe.minutes * 60
    started, step_times = time.perf_counter(), []
    model.train()
    smooth = None
    while state.total_steps is None or state.step < state.total_steps:
        if stop.requested:
            break
        t0 = time.perf_counter()
        batch = next(batches)
        lr = learning_rate(recipe, state.step, state.total_steps or 10**9)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Right padding needs no attention mask: under a causal mask no real token sees it.
        loss = model(input_ids=batch.input_ids, labels=batch.labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        state.step += 1
        state.tokens += batch.num_tokens
        state.seconds += dt
        value = loss.item()
        smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
        state.train_loss.append((state.step, round(value, 4)))
        step_times.append(dt)
        if recipe.steps is None and len(step_times) in (6, recipe.warmup_steps) and (
            state.step == len(step_times)  # a resumed run keeps the count it was given
        ):
            # Fit the step count to the time budget: a first estimate after 6 steps (step 1
            # warms caches), refined at the end of warmup, before the count shapes the schedule.
            per_step = sum(step_times[1:]) / (len(step_times) - 1)
            remaining = budget - (time.perf_counter() - started)
            state.total_steps = max(state.step + 1, state.step + int(remaining / per_step))
            bar.total = state.total_steps
            log(f"training for {state.total_steps} steps (~{recipe.minutes:g} min at "
                f"{per_step:.2f} s/step)")
        bar.set_postfix(loss=f"{smooth:.3f}", tok_s=f"{batch.num_tokens / dt:,.0f}", lr=f"{lr:.1e}")
        bar.update(1)
        done = state.total_steps is not None and state.step >= state.total_steps
        if state.step % recipe.eval_every == 0 and not done:
            state.heldout_loss.append((state.step, heldout_loss(model, quick_eval)))
            line = (f"step {state.step}: train loss {smooth:.3f}, "
                    f"held-out loss {state.heldout_loss[-1][1]:.3f}")
            if progress:
                bar.write(line, file=sys.stderr)
            else:
                log(line)
        if state.step % recipe.checkpoint_every == 0 and not done:
            save_checkpoint(out, model, optimizer, state)
    bar.close()


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_signals():
    """The first SIGINT/SIGTERM asks the loop to stop at the end of the step (a half-applied
    optimizer step would corrupt the weights); a second SIGINT stops at once."""
    flag = _StopFlag()
    previous = {}

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:
        pass  # not the main thread: signals stay with whoever owns them
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- checkpoints and export ----------------------------------------------------------------


def save_checkpoint(out: Path, model, optimizer, state: TrainState) -> None:
    path = out / CHECKPOINT
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state": dataclasses.asdict(state)}, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint whole


def load_checkpoint(out: Path, model, optimizer) -> TrainState:
    saved = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = TrainState(**saved["state"])
    state.train_loss = [tuple(x) for x in state.train_loss]
    state.heldout_loss = [tuple(x) for x in state.heldout_loss]
    return state


def export(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Write the Hugging Face checkpoint (bf16 weights: half the size, and the engine computes in
    float32 on CPUs without bf16 anyway). Files are written to a side directory, then each is
    moved into place whole."""
    tmp = out / ".export"
    shutil.rmtree(tmp, ignore_errors=True)
    bf16 = LlamaForCausalLM(model.config).to(torch.bfloat16)
    bf16.load_state_dict(model.state_dict())
    bf16.generation_config = model.generation_config
    bf16.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _portable_tokenizer_config(tmp, tokenizer, model.config.max_position_embeddings)
    for path in sorted(tmp.iterdir(), key=lambda p: p.name == "model.safetensors"):
        os.replace(path, out / path.name)  # the weights last: their presence means complete
    tmp.rmdir()


def _portable_tokenizer_config(directory: Path, tokenizer, context: int) -> None:
    """transformers 5 writes the chat template to chat_template.jinja and names its own backend
    class; older transformers, vLLM and llama.cpp's converter read the template from
    tokenizer_config.json and know PreTrainedTokenizerFast. Write it the way all of them read."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=tokenizer.chat_template,
                  model_max_length=context)
    path.write_text(json.dumps(config, indent=2) + "\n")
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    (directory / "model.safetensors").chmod(0o644)
