"""Download a model from the Hugging Face Hub into $TENSHU_HOME/models, to serve it offline.

  tenshu pull Qwen/Qwen3-0.6B                          a checkpoint, into models/Qwen3-0.6B
  tenshu pull Qwen/Qwen3-0.6B-GGUF --include '*Q8_0.gguf'
                                                       only the files matching (repeatable)
  tenshu pull Qwen/Qwen3-0.6B --revision v1.0 --name qwen-small

Files already downloaded are kept (run it again after an interruption; a transfer that drops
resumes where it stopped). The hub is HF_ENDPOINT (default https://huggingface.co); a gated or
private repository needs HF_TOKEN or `hf auth login`. Then: tenshu serve --model NAME.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tenshu.config import models_dir

# what serving needs; the rest of a repository (README, images, other formats) is left there
DEFAULT_INCLUDE = ("*.json", "*.safetensors", "*.gguf", "*.jinja", "tokenizer.model", "*.txt")


def add_arguments(parser) -> None:
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, e.g. "
                                                           "Qwen/Qwen3-0.6B")
    parser.add_argument("--include", action="append", metavar="PATTERN",
                        help="download only files matching this glob (repeatable; default: "
                             "the weights, configs and tokenizer)")
    parser.add_argument("--revision", help="a branch, tag or commit (default: main)")
    parser.add_argument("--name", help="the folder (and model) name under "
                                       "$TENSHU_HOME/models (default: the repository's name)")


def main(args) -> int:
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = args.name or args.repo_id.rstrip("/").rsplit("/", 1)[-1]
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"{name!r} cannot be a model's folder name; give --name NAME "
                         "(letters, digits, _ . -)")
    target = models_dir() / name
    try:
        if not args.include:
            # the repository's record lists its files in one request; list_repo_files walks
            # the tree with retries, ~25 s of them before an unreachable Hub is reported
            info = HfApi().model_info(args.repo_id, revision=args.revision)
            _one_quantization([s.rfilename for s in info.siblings or []], args.repo_id)
        print(f"pulling {args.repo_id} into {target}", file=sys.stderr)
        snapshot_download(args.repo_id, revision=args.revision, local_dir=target,
                          allow_patterns=args.include or list(DEFAULT_INCLUDE))
    except GatedRepoError:
        raise ValueError(f"{args.repo_id} is gated: accept its terms on the Hub, then set "
                         "HF_TOKEN (or `hf auth login`) and pull again") from None
    except RepositoryNotFoundError:
        raise ValueError(f"no repository {args.repo_id} on the Hub (or it is private: set "
                         "HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ValueError(f"{args.repo_id} has no revision {args.revision!r}") from None
    except (LocalEntryNotFoundError, httpx2.TransportError):
        raise ValueError(f"cannot reach the Hub to download {args.repo_id} (offline? "
                         "HF_ENDPOINT or a proxy wrong?); files already pulled are kept, pull "
                         "again when online") from None
    except HfHubHTTPError as exc:
        raise ValueError(f"the Hub refused {args.repo_id}: {exc}") from None
    files = [f for f in target.rglob("*") if f.is_file() and ".cache" not in f.parts]
    if not files:
        raise ValueError(f"nothing in {args.repo_id} matched {', '.join(args.include or [])}"
                         "; see its files on the Hub and give --include patterns that match")
    print(f"pulled {len(files)} files; serve it with: tenshu serve --model {_serve_name(target)}",
          file=sys.stderr)
    return 0


def _one_quantization(files: list[str], repo_id: str) -> None:
    """A GGUF repository holds one file per quantization, often tens of GB together: without
    --include, say which there are rather than pull them all."""
    ggufs = [f for f in files if f.endswith(".gguf")]
    if len(ggufs) > 1:
        raise ValueError(f"{repo_id} has {len(ggufs)} GGUF files ({', '.join(ggufs[:6])}"
                         f"{', ...' if len(ggufs) > 6 else ''}); pick one with --include, e.g. "
                         f"--include '{ggufs[0]}'")


def _serve_name(target: Path) -> str:
    """What --model takes for it: the folder's name, or a file of a folder of several GGUF
    files (which one to serve is the person's choice)."""
    ggufs = sorted(target.glob("*.gguf"))
    if not (target / "config.json").exists() and len(ggufs) > 1:
        return f"{target.name}/{ggufs[0].name}   (or another of its {len(ggufs)} .gguf files)"
    return target.name
