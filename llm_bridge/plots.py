"""The trainer's figure: reward (training batches and held-out greedy evaluation) and KL."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from simulator.files import atomic_savefig

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt


def _series(history: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    rows = [row for row in history if key in row]
    return [row["step"] for row in rows], [row[key] for row in rows]


def plot_training(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Two panels over training steps: rewards (train batch mean, held-out eval) and KL
    (approx_kl = mean log μ − log π_θ on the batch; kl_ref = k3 to the initial model).
    Saved atomically as a PNG; returns ``path``."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    top.plot(*_series(history, "reward"), lw=1.2, label="train batch reward")
    top.plot(*_series(history, "eval_reward"), "o-", lw=1.6, label="held-out reward (greedy)")
    top.set_ylabel("reward")
    top.legend(fontsize=8, frameon=False)
    for key, label in (("approx_kl", "approx KL to behaviour (k1)"),
                       ("kl_ref", "KL to initial model (k3)")):
        steps, values = _series(history, key)
        if steps:
            bottom.plot(steps, values, lw=1.2, label=label)
    bottom.axhline(0.0, color="grey", lw=0.6)
    bottom.set_ylabel("KL per token")
    bottom.set_xlabel("training step")
    bottom.legend(fontsize=8, frameon=False)
    fig.suptitle(f"grlab train-llm: {title}", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path
