"""The learning loop: the datasets the feedback makes, and LoRA adapters trained on them.

  tenshu learn data                         the owner's: how many SFT examples, DPO pairs and KTO
                                            labels there are (train / held out), and what more
                                            each method needs before it can train
  tenshu learn data --user ana              ana's (an admin's read of her record: logged)
  tenshu learn data --out DIR               ...and write them: DIR/trl/{sft,dpo,kto}.{train,
                                            heldout}.jsonl (TRL's conversational formats),
                                            DIR/mlx/{sft,dpo}/{train,valid}.jsonl (mlx-lm's),
                                            DIR/manifest.json (counts and content hashes)

  tenshu learn sft --model tenshu-tiny      train a LoRA adapter (sft, dpo or kto) on the
                                            owner's data for a model (a checkpoint folder, the
                                            built-in tenshu-tiny, or an embedded model of
                                            tenshu.toml) into $TENSHU_HOME/adapters/NAME/vN/
  tenshu learn dpo --model M --adapter mine --rank 16 --alpha 32 --epochs 3 [--resume]
  tenshu learn gate mine [vN]               judge a version (default: the newest) against the one
                                            in service (or the base model) on held-out data; put
                                            it in service if it passes (--dry-run: only judge)
  tenshu learn nightly [--method dpo]       one run of the loop, for a schedule: when there is
                                            enough new feedback, train the next version, gate it,
                                            promote it if it passes; one run at a time
  tenshu learn history [--adapter NAME]     the runs so far, and what each did

The same feedback gives the same files, byte for byte; a prompt that is held out is never in a
training file. Ratings count by their latest value; arena ties and "both bad" make no pair.
Training runs niced, on half the cores (--threads), with a progress bar; it refuses when there is
too little data and says how much more is needed. An adapter's folder holds the PEFT adapter,
manifest.json (data hash, hyperparameters, metrics) and loss.png.
"""

from __future__ import annotations

import os
from pathlib import Path

from tenshu.cli.table import print_table
from tenshu.config import (
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_NAME,
    load_server_settings,
    tenshu_home,
)
from tenshu.learn.datasets import KINDS, MINIMUM, build
from tenshu.learn.registry import Registry
from tenshu.learn.train import METHODS, TrainConfig
from tenshu.store import Principal, open_store
from tenshu.store.feedback import export_rows


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    data = actions.add_parser("data", help="the datasets the feedback makes")
    data.add_argument("--user", help="whose feedback (default: the owner's)")
    data.add_argument("--out", type=Path, help="write the datasets into this folder")
    data.add_argument("--format", choices=["trl", "mlx", "both"], default="both",
                      help="which files to write with --out (default: both)")
    gate = actions.add_parser("gate", help="judge an adapter version; promote it if it passes")
    gate.add_argument("adapter")
    gate.add_argument("version", nargs="?")
    gate.add_argument("--user", help="whose held-out data (default: the owner's)")
    gate.add_argument("--dry-run", action="store_true", help="judge, but promote nothing")
    history = actions.add_parser("history", help="the nightly runs of an adapter")
    history.add_argument("--adapter", default="personal")
    nightly = actions.add_parser("nightly", help="one run of the loop: train, gate, promote")
    nightly.add_argument("--method", choices=METHODS, default="dpo")
    nightly.add_argument("--min-new", type=int, default=8,
                         help="new training examples needed since the last run (default: 8)")
    _training_options(nightly)
    for method in METHODS:
        p = actions.add_parser(method, help=f"train a LoRA adapter with {method.upper()}")
        _training_options(p)
        p.add_argument("--out", type=Path, help="where (default: the next version under "
                                                "$TENSHU_HOME/adapters/ADAPTER/)")
        p.add_argument("--resume", action="store_true",
                       help="go on from the last checkpoint in --out")


def _training_options(p) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL_NAME,
                   help="a checkpoint folder, tenshu-tiny, or an embedded model of tenshu.toml")
    p.add_argument("--adapter", default="personal", help="the adapter's name")
    p.add_argument("--user", help="whose feedback (default: the owner's)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--sft-weight", type=float, default=1.0,
                   help="DPO: weight of a supervised loss on the chosen answers (0: plain DPO)")
    p.add_argument("--threads", type=int, help="torch threads (default: half the cores)")
    p.add_argument("--memory-gib", type=float, default=_half_the_memory(),
                   help="the most memory training may take (default: half the machine's; "
                        "0: no cap)")


def main(args) -> int:
    if args.action == "history":
        return _history(args)
    with open_store() as store:
        owner = Principal.of(store.users.owner())
        datasets = build(export_rows(store.engine, owner, user=args.user))
    if args.action in METHODS:
        return _train(args, datasets)
    if args.action == "gate":
        return _gate(args, datasets)
    if args.action == "nightly":
        return _nightly(args, datasets)
    who = args.user or owner.name
    counts = datasets.counts()
    print_table(("DATASET", "STATUS", "TRAIN", "HELD OUT", "NEEDED"), [
        (kind.upper(), "ready" if datasets.needs(kind) is None else "too little",
         str(counts[kind]["train"]), str(counts[kind]["heldout"]), str(MINIMUM[kind]))
        for kind in KINDS], left=2)
    for kind in KINDS:
        if (need := datasets.needs(kind)) is not None:
            print(f"  {need}")
    print(f"{who}'s feedback; content hash {datasets.content_hash()[:16]}")
    if args.out is not None:
        formats = ("trl", "mlx") if args.format == "both" else (args.format,)
        written = datasets.write(args.out, formats)
        print(f"wrote {len(written)} files under {args.out}")
    return 0


def _train(args, datasets) -> int:
    from tenshu.learn.train import train

    if (need := datasets.needs(args.action)) is not None:
        raise ValueError(f"not enough data to train: {need}")
    config = _config(args, args.action)
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out: the folder of the run to go on with")
    out = args.out or Registry(tenshu_home() / "adapters").next_version(args.adapter)
    base = model_dir(args.model)
    print(f"training {args.action.upper()} adapter {args.adapter!r} for {base} into {out}")
    result = train(base, datasets, config, out, resume=args.resume)
    print(f"done: {result.steps} steps in {result.seconds:.0f} s, loss {result.loss:.4f}; "
          f"adapter in {result.adapter}")
    return 0


def _gate(args, datasets) -> int:
    from tenshu.learn.gate import judge, record

    registry = Registry(tenshu_home() / "adapters")
    versions = registry.versions(args.adapter)
    if not versions:
        raise ValueError(f"no adapter named {args.adapter!r}")
    candidate = registry.get(args.adapter, args.version or versions[-1].version)
    serving = registry.serving(args.adapter)
    incumbent = registry.get(args.adapter, serving) if serving else None
    if incumbent is not None and incumbent.version == candidate.version:
        raise ValueError(f"{args.adapter} {candidate.version} is the version in service already")
    base = candidate.manifest.get("base")
    if not base or not Path(base).is_dir():
        raise ValueError(f"{candidate.path}/manifest.json names no base model folder that exists")
    against = f"{args.adapter} {incumbent.version}" if incumbent else "the base model"
    print(f"judging {args.adapter} {candidate.version} against {against}")
    verdict = judge(Path(base), candidate.adapter, incumbent.adapter if incumbent else None,
                    datasets)
    record(verdict, candidate.path / "manifest.json")
    accuracy = verdict.accuracy
    print(f"preference accuracy {accuracy['candidate']:.2f} against {accuracy['incumbent']:.2f} "
          f"on {verdict.pairs} held-out pairs; difference 95% interval "
          f"[{accuracy['interval'][0]:+.2f}, {accuracy['interval'][1]:+.2f}]")
    if not verdict.promote:
        print("rejected: " + "; ".join(verdict.reasons))
        return 0
    if args.dry_run:
        print("it passes (--dry-run: not promoted)")
        return 0
    registry.promote(args.adapter, candidate.version)
    print(f"promoted: {args.adapter} {candidate.version} is in service")
    return 0


def _nightly(args, datasets) -> int:
    from tenshu.learn.nightly import run

    config = _config(args, args.method)
    done = run(Registry(tenshu_home() / "adapters"), args.adapter, model_dir(args.model),
               datasets, config, min_new=args.min_new)
    print(f"{done.status}: {done.why}")
    return 0


def _half_the_memory() -> float:
    """Half this machine's memory in GiB (0, no cap, where that cannot be read)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**31, 1)
    except (AttributeError, OSError, ValueError):
        return 0.0


def _config(args, method: str) -> TrainConfig:
    return TrainConfig(method, rank=args.rank, alpha=args.alpha, epochs=args.epochs,
                       max_steps=args.max_steps, learning_rate=args.lr,
                       batch_size=args.batch_size, threads=args.threads,
                       memory_gib=args.memory_gib,
                       sft_weight=args.sft_weight)


def _history(args) -> int:
    from tenshu.learn.nightly import history

    runs = history(Registry(tenshu_home() / "adapters"), args.adapter)
    if not runs:
        print(f"no runs of {args.adapter!r} yet")
        return 0
    print_table(("STARTED", "STATUS", "VERSION", "EXAMPLES", "SECONDS", "WHY"), [
        (r["started"], r["status"], r["version"] or "-", str(r["examples"]),
         f"{r['seconds']:.0f}", r["why"][:80]) for r in runs], left=3)
    return 0


def model_dir(model: str) -> Path:
    """A checkpoint folder from what the person named: a folder, the built-in model, or an
    embedded model of tenshu.toml."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    if model == DEFAULT_MODEL_NAME:
        return DEFAULT_MODEL_DIR
    for spec in load_server_settings().models:
        if spec.name == model and spec.backend == "embedded":
            return Path(spec.path).expanduser()
    raise ValueError(f"no model {model!r}: name a checkpoint folder, {DEFAULT_MODEL_NAME}, or "
                     "an embedded model of tenshu.toml")
