"""Training a LoRA adapter on a person's feedback: SFT, DPO or KTO, with peft and TRL's trainers.

    train(base_dir, datasets, TrainConfig("dpo"), out_dir) -> TrainResult

The adapter is LoRA on every linear layer (rank and alpha configurable), saved in PEFT's format
(adapter_config.json, adapter_model.safetensors) in `out/adapter`, beside a manifest.json (the
base model, the data's content hash and counts, the hyperparameters, the metrics; the gate adds
its verdict) and a picture of the loss (and, for DPO, the reward margin) by step. Checkpoints go
to `out/checkpoints` every `save_steps`, so an interrupted run resumes (`resume=True`) where it
stopped.

It runs at low priority: the process is niced, torch uses `threads` threads (half the cores
by default), and with `memory_gib` its memory is capped (a run that needs more fails with a
clear error instead of pushing the server into swap), so a server on the same machine stays
responsive. It refuses to train on less data
than the method needs (datasets.MINIMUM) and says how much more. Only the held-out split's
prompts are never seen: training uses the training split alone.

torch, peft and TRL are imported when training starts, not with this module.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tenshu.learn.datasets import Datasets

METHODS = ("sft", "dpo", "kto")


@dataclass(frozen=True)
class TrainConfig:
    method: str  # sft | dpo | kto
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    learning_rate: float = 1e-4
    epochs: float = 2.0
    max_steps: int = -1  # > 0: stop after this many steps, whatever the epochs
    batch_size: int = 4
    max_length: int = 1024  # tokens of prompt and answer together
    beta: float = 0.1  # DPO's and KTO's: how far from the base model the adapter may go
    # DPO: the weight of a supervised loss on the chosen answers beside the preference loss
    # (RPO). Without it, DPO may lower both answers' likelihood and change what the model says
    # before the part the pair disagrees on: on the loop's proof, plain DPO won every held-out
    # pair yet signed a quarter of its answers and cut the rest short (docs/learning.md), where
    # this signed them all; 0 is plain DPO
    sft_weight: float = 1.0
    save_steps: int = 50
    seed: int = 0
    threads: int | None = None  # None: half the machine's cores
    nice: int = 10
    # the most memory the training process may take, in GiB (its data segment: RLIMIT_DATA);
    # 0: no cap. For a process of its own (the CLI, the nightly job): the cap is the process's
    memory_gib: float = 0.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.sft_weight < 0:
            raise ValueError("sft_weight must be >= 0")
        if self.rank < 1 or self.alpha < 1:
            raise ValueError("rank and alpha must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


@dataclass
class TrainResult:
    adapter: Path  # the PEFT adapter's folder
    manifest: Path
    steps: int
    loss: float | None  # the last logged training loss
    seconds: float
    tokens_per_second: float | None
    history: list[dict] = field(default_factory=list)  # the trainer's log, one dict per step


def train(base: Path, datasets: Datasets, config: TrainConfig, out: Path, *,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train an adapter for `base` (a checkpoint folder) on the training split of `datasets`'s
    `config.method` data, into `out`. Raises ValueError when there is too little data."""
    if (need := datasets.needs(config.method)) is not None:
        raise ValueError(need)
    import torch

    threads = torch.get_num_threads()
    _lower_priority(config)
    try:
        return _train(base, datasets, config, out, resume=resume, progress=progress)
    except (MemoryError, RuntimeError, OSError) as exc:
        # the budget shows as MemoryError, torch's "cannot allocate", or the OS's ENOMEM (an
        # import that opens a file past the cap)
        out_of_memory = isinstance(exc, MemoryError) or \
            (isinstance(exc, OSError) and exc.errno == errno.ENOMEM) or \
            (isinstance(exc, RuntimeError) and "allocate" in str(exc))
        if config.memory_gib and out_of_memory:
            raise ValueError(f"training ran out of its memory budget ({config.memory_gib:g} "
                             "GiB): lower --batch-size or --max-length, or raise "
                             "--memory-gib") from None
        raise
    finally:
        torch.set_num_threads(threads)  # a caller in this process gets its threads back


def _train(base: Path, datasets: Datasets, config: TrainConfig, out: Path, *, resume: bool,
           progress: bool) -> TrainResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_split, _ = datasets.split(config.method)
    rows = [e.trl() for e in train_split]
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer_cls, args = _trainer(config, out / "checkpoints", cuda=cuda, progress=progress)
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora)
    checkpoint = resume and any((out / "checkpoints").glob("checkpoint-*"))
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=True if checkpoint else None)
    seconds = time.perf_counter() - started
    adapter = out / "adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)  # the template it was trained with, for who loads it
    history = [h for h in trainer.state.log_history if "loss" in h]
    tokens = sum(h.get("num_tokens", 0) for h in history[-1:])  # TRL counts them cumulatively
    result = TrainResult(
        adapter=adapter, manifest=out / "manifest.json", steps=trainer.state.global_step,
        loss=history[-1]["loss"] if history else None, seconds=seconds,
        tokens_per_second=tokens / seconds if tokens and seconds else None, history=history)
    _plot(history, config.method, out / "loss.png")
    result.manifest.write_text(json.dumps({
        "method": config.method, "base": str(Path(base).resolve()),
        "data": {"hash": datasets.content_hash(config.method),
                 "train": len(train_split), "heldout": len(datasets.split(config.method)[1])},
        "hyperparameters": asdict(config),
        "metrics": {"steps": result.steps, "loss": result.loss,
                    "train_loss": output.training_loss, "seconds": round(seconds, 3),
                    "tokens_per_second": result.tokens_per_second},
        "verdict": None,  # the gate's, once it has judged the adapter
    }, indent=2) + "\n", encoding="utf-8")
    return result


def _trainer(config: TrainConfig, checkpoints: Path, *, cuda: bool, progress: bool):
    """TRL's trainer class for the method, and its arguments."""
    common = dict(output_dir=str(checkpoints), num_train_epochs=config.epochs,
                  max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
                  learning_rate=config.learning_rate, logging_steps=1,
                  save_steps=config.save_steps, save_total_limit=2, seed=config.seed,
                  report_to=[], use_cpu=not cuda, disable_tqdm=not progress,
                  max_length=config.max_length, dataloader_num_workers=0)
    if config.method == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTTrainer, SFTConfig(**common)
    if config.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        losses = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, config.sft_weight]) \
            if config.sft_weight > 0 else {}
        return DPOTrainer, DPOConfig(**common, beta=config.beta, **losses)
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig(**common, beta=config.beta)


def _lower_priority(config: TrainConfig) -> None:
    """Nice the process, cap torch's threads and (with memory_gib) its memory, so the server
    beside it stays responsive."""
    import torch

    if config.nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):  # not allowed here: run at the priority we have
            os.nice(config.nice)
    threads = config.threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    if config.memory_gib:
        import resource

        cap = int(config.memory_gib * 2**30)
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


def _plot(history: list[dict], method: str, path: Path) -> None:
    """The loss by step (and DPO's reward margin beside it) as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    margins = [h.get("rewards/margins") for h in history]
    panels = 2 if method == "dpo" and any(m is not None for m in margins) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.2), squeeze=False)
    axes[0][0].plot(steps, [h["loss"] for h in history])
    axes[0][0].set(title=f"{method.upper()} training loss", xlabel="step", ylabel="loss")
    if panels == 2:
        axes[0][1].plot(steps, [m or 0.0 for m in margins], color="tab:orange")
        axes[0][1].set(title="reward margin (chosen - rejected)", xlabel="step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
