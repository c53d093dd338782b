"""What a finished `tenshu train tiny` run leaves for people to look at: the loss curve as a PNG
and a model card (README.md) with the recipe, the measured figures and sample conversations."""

from __future__ import annotations

import json
from pathlib import Path


def plot_loss(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; and never pick up a GUI backend from the environment
    import matplotlib.pyplot as plt

    steps, losses = zip(*results["train_loss"], strict=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, losses, lw=0.8, alpha=0.35, color="tab:blue", label="train (per step)")
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
              for i in range(len(losses))]
    ax.plot(steps, smooth, lw=1.6, color="tab:blue", label=f"train (mean of {window})")
    if results["heldout_curve"]:
        h_steps, h_losses = zip(*results["heldout_curve"], strict=True)
        ax.plot(h_steps, h_losses, "o-", ms=3, color="tab:orange", label="held out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_yscale("log")
    ax.set_title(f"tenshu train tiny: held-out loss {results['heldout_loss']:.3f}, "
                 f"perplexity {results['heldout_perplexity']:.2f}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def model_card(recipe: dict, results: dict, evals: list[dict], samples: int = 6) -> str:
    """README.md for the checkpoint: what it is, what it is not, and the numbers."""
    lines = [
        "# tenshu-tiny",
        "",
        "A tiny chat model built from nothing by `tenshu train tiny`: a synthetic corpus, a",
        "byte-level BPE tokenizer and a Llama-architecture decoder, all trained on one machine.",
        "It plays **Mochi**, a small cat who lives in a castle keep. It is a demonstration of the",
        "whole pipeline (data, tokenizer, training, serving) and a model that lets tenshu work",
        "offline; it is **not** a capable assistant: it knows a few dozen cat topics and nothing",
        "else. Point tenshu at a real model for real work.",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(recipe, indent=2),
        "```",
        "",
        "## Results",
        "",
        f"- parameters: {results['parameters']:,}",
        f"- training: {results['steps']} steps, {results['train_tokens']:,} tokens in "
        f"{results['train_seconds'] / 60:.1f} min ({results['tokens_per_second']:,} tokens/s)",
        f"- held-out loss: {results['heldout_loss']:.4f} nats/token, perplexity "
        f"{results['heldout_perplexity']:.3f} ({results['heldout_tokens']:,} tokens)",
        "",
        "Behaviour on held-out paraphrases (never in the corpus), played through tenshu's engine.",
        "A reply passes when it ends its turn with the end-of-turn token, contains a persona marker",
        "word, and repeats no three-word sequence three times (see tenshu/learn/evaluate.py).",
        "",
        "On topic (reported, not part of the pass): the reply is made of the sentences of the topic",
        "asked about. It measures understanding of new wordings, which a model this size lacks.",
        "",
        "| decoding | replies | ends turn | in persona | no repetition | single-turn pass | 3-turn pass | on topic |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in evals:
        name = "greedy" if e["temperature"] == 0 else f"temperature {e['temperature']:g}"
        lines.append(
            f"| {name} | {e['replies']} | {e['ends_turn']:.0%} | {e['in_persona']:.0%} | "
            f"{e['no_repetition']:.0%} | {e['single_turn_pass']:.0%} | {e['multi_turn_pass']:.0%} | "
            f"{e['on_topic']:.0%} |"
        )
    lines += [
        "",
        "For comparison, greedy replies to 100 fresh single-turn chats in the corpus's own",
        f"wordings are on topic {evals[0]['corpus_on_topic']:.0%} of the time: the model learned its",
        "topics; it does not know words it never saw.",
        "",
        "![loss curve](loss.png)", "", "## Sample conversations (greedy)", "",
    ]
    multi = [t for t in evals[0]["transcripts"] if len(t["messages"]) > 2]
    single = [t for t in evals[0]["transcripts"] if len(t["messages"]) == 2]
    for t in single[: samples - 2] + multi[:2]:
        for m in t["messages"]:
            who = "you" if m["role"] == "user" else "mochi"
            lines.append(f"> **{who}:** {m['content']}  ")
        lines.append("")
    return "\n".join(lines) + "\n"
