"""The learning loop: what the feedback given so far makes, as datasets.

  tenshu learn data                         the owner's: how many SFT examples, DPO pairs and KTO
                                            labels there are (train / held out), and what more
                                            each method needs before it can train
  tenshu learn data --user ana              ana's (an admin's read of her record: logged)
  tenshu learn data --out DIR               ...and write them: DIR/trl/{sft,dpo,kto}.{train,
                                            heldout}.jsonl (TRL's conversational formats),
                                            DIR/mlx/{sft,dpo}/{train,valid}.jsonl (mlx-lm's),
                                            DIR/manifest.json (counts and content hashes)

The same feedback gives the same files, byte for byte; a prompt that is held out is never in a
training file. Ratings count by their latest value; arena ties and "both bad" make no pair.
"""

from __future__ import annotations

from pathlib import Path

from tenshu.cli.table import print_table
from tenshu.learn.datasets import KINDS, MINIMUM, build
from tenshu.store import Principal, open_store
from tenshu.store.feedback import export_rows


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    data = actions.add_parser("data", help="the datasets the feedback makes")
    data.add_argument("--user", help="whose feedback (default: the owner's)")
    data.add_argument("--out", type=Path, help="write the datasets into this folder")
    data.add_argument("--format", choices=["trl", "mlx", "both"], default="both",
                      help="which files to write with --out (default: both)")


def main(args) -> int:
    with open_store() as store:
        owner = Principal.of(store.users.owner())
        datasets = build(export_rows(store.engine, owner, user=args.user))
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
