"""E6: the paper's Pitfall 1 as a picture — off-policy REINFORCE drifts to the wrong arm.

Three-armed bandit, rewards r = [0, 0.8, 1], data always drawn from the fixed behavior
μ = [0.3, 0.6, 0.1] (the offline setting, with π_0 = μ). The exact expected REINFORCE update
is the constant (1 − 1/K)·μ⊙(r − E_μ r) = (1 − 1/K)·[−0.174, 0.132, 0.042], so π_t goes to
arm 2 (reward 0.8). Mirror descent on the same data — what minimising the paper's pairwise
surrogate and re-anchoring does (claim 5c checks that equivalence) — gives π_t ∝ π_0·e^{t·r/τ}
and goes to arm 3. On-policy REINFORCE also finds arm 3, and REC-OneSide-NoIS on the fixed data
stops where its clipping mask closes, near μ. Every curve is exact (no sampling).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.closed_forms import mirror_descent_iterates
from simulator.exact import iterate_expected_update
from simulator.files import atomic_write_text, output_dir

MU = (0.3, 0.6, 0.1)
REWARDS = (0.0, 0.8, 1.0)


@dataclasses.dataclass(frozen=True)
class PitfallConfig:
    """Group size K, SGD step, steps, and the mirror-descent temperature τ."""

    k: int = 4
    lr: float = 2.0
    steps: int = 300
    tau: float = 5.0


def pitfall_paths(config: PitfallConfig = PitfallConfig()) -> dict[str, Tensor]:
    """label ↦ π_t [steps + 1, 3] for each method, all from π_0 = μ."""
    env = SoftmaxBandit(torch.tensor([REWARDS], dtype=torch.float64))
    mu = torch.tensor([MU], dtype=torch.float64)
    theta0 = torch.log(mu)
    common = {"lr": config.lr, "steps": config.steps}

    def probs(behavior: Tensor | str, loss: str, **hparams: object) -> Tensor:
        path = iterate_expected_update(env, theta0, behavior, loss, config.k, **common,
                                       **hparams)
        return torch.softmax(path[:, 0], dim=-1)

    return {
        "REINFORCE, off-policy (data from μ)": probs(mu, "reinforce"),
        "mirror descent on the same data (π ∝ π_t·exp(r/τ))": mirror_descent_iterates(
            mu[0], env.rewards[0], config.tau, config.steps),
        "REC-OneSide-NoIS, off-policy (data from μ)": probs(mu, "rec-oneside-nois"),
        "REINFORCE, on-policy": probs("on-policy", "reinforce"),
    }


def run_pitfall(out_dir: Path, config: PitfallConfig = PitfallConfig()
                ) -> tuple[str, dict[str, Path]]:
    """Compute the paths, write pitfall.png and table.md under ``out_dir``; return the
    markdown table and the paths."""
    from simulator.plots import plot_pitfall  # matplotlib only when the figure is drawn

    out_dir = output_dir(out_dir)  # a folder that cannot be written fails before the work
    paths = pitfall_paths(config)
    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    lines = [
        "# E6: Pitfall 1 — off-policy REINFORCE vs mirror descent on a three-armed bandit", "",
        f"r = {list(REWARDS)}, data from the fixed μ = {list(MU)} (π_0 = μ), K = {config.k}, "
        f"SGD lr {config.lr}, {config.steps} exact steps; mirror descent τ = {config.tau}.", "",
        "| method | π_T (arm 1, 2, 3) | expected reward E_π r | arm with most mass |",
        "| --- | --- | --- | --- |",
    ]
    for label, pi in paths.items():
        final = pi[-1]
        lines.append(f"| {label} | {', '.join(f'{p:.3f}' for p in final.tolist())} | "
                     f"{float(final @ rewards):.3f} | {int(final.argmax()) + 1} |")
    g = [m * (r - sum(a * b for a, b in zip(MU, REWARDS, strict=True)))
         for m, r in zip(MU, REWARDS, strict=True)]
    lines += ["", "The off-policy REINFORCE update is the constant (1 − 1/K)·μ⊙(r − E_μ r) = "
              f"{1 - 1 / config.k:.2f}·[{', '.join(f'{x:.3f}' for x in g)}]: its largest "
              "component is arm 2's, whatever θ is."]
    files = {"markdown": out_dir / "table.md", "plot": out_dir / "pitfall.png"}
    text = "\n".join(lines) + "\n"
    atomic_write_text(files["markdown"], text)
    plot_pitfall(paths, rewards, files["plot"], title=f"E6: Pitfall 1 (K = {config.k})")
    return text, files
