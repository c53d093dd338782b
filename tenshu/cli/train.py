"""Train a model from scratch on this machine.

  tenshu train tiny                          the default recipe (~10 minutes on 2 CPU cores)
  tenshu train tiny --out DIR --minutes 3    a shorter run into DIR
  tenshu train tiny --out DIR --resume       continue an interrupted run from its last checkpoint

`tiny` generates a synthetic conversation corpus (Mochi, a small cat who lives in a castle keep),
trains a byte-level BPE tokenizer and a Llama-architecture decoder, and writes a Hugging Face
checkpoint (config.json, model.safetensors, tokenizer files with a chat template) that tenshu
and transformers both load: `tenshu chat DIR`. It also writes loss.png, eval.json (held-out
behaviour) and a README.md model card. Ctrl-C saves a checkpoint and stops; --resume continues
with the recipe the run started with. tenshu's built-in default model is this recipe's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tenshu.config import DEFAULT_MODEL_NAME, tenshu_home
from tenshu.learn.tiny import SIZES, TinyRecipe, TrainingInterrupted, train_tiny


def add_arguments(parser) -> None:
    defaults = TinyRecipe()
    parser.add_argument("recipe", choices=["tiny"], help="what to train")
    parser.add_argument("--out", type=Path, help="output directory (default: "
                        f"$TENSHU_HOME/models/{DEFAULT_MODEL_NAME})")
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="training time budget; the step count is calibrated to it "
                        "(default %(default)s)")
    parser.add_argument("--steps", type=int, help="train exactly this many steps instead")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--size", choices=list(SIZES), default=defaults.size,
                        help="model size: " + "; ".join(
                            f"{k}: {v.layers} layers x {v.hidden}, vocab {v.vocab}"
                            for k, v in SIZES.items()))
    parser.add_argument("--conversations", type=int, default=defaults.conversations,
                        help="corpus size (default %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        metavar="N", help="save a resumable checkpoint every N steps")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard an earlier tenshu run in --out and start over")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")


def main(args) -> int:
    out = args.out or tenshu_home() / "models" / DEFAULT_MODEL_NAME
    recipe = TinyRecipe(
        size=args.size, seed=args.seed, conversations=args.conversations, minutes=args.minutes,
        steps=args.steps, checkpoint_every=args.checkpoint_every,
    )
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        train_tiny(out, recipe, resume=args.resume, overwrite=args.overwrite,
                   evaluate=not args.no_eval, progress=sys.stderr.isatty(), log=log)
    except TrainingInterrupted as exc:
        log(f"tenshu train: {exc}")
        return 130
    print(out)
    return 0
