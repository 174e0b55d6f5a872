"""The experiment catalogue: every named experiment runs, and E6 shows what the paper says."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simulator.dynamics import SETTINGS, simulate
from simulator.experiments import EXPERIMENTS, FIGURES, experiment_names
from simulator.pitfall import MU, PitfallConfig, pitfall_paths, run_pitfall


@pytest.mark.parametrize("key", sorted(EXPERIMENTS))
def test_every_arm_of_every_experiment_takes_a_finite_step(key):
    """A smoke test with teeth: one step of each arm (one seed, every setting) must give finite
    metrics — a typo in a keyword, an unknown loss or a mode that cannot run fails here, not
    five minutes into ``grlab experiment``."""
    exp = EXPERIMENTS[key]
    problem = dataclasses.replace(exp.problem, prompts=1)
    for arm in exp.arms:
        traj = simulate(problem, arm.loss, seeds=[0], schedules=[SETTINGS[s] for s in
                                                                 exp.settings],
                        lrs=[exp.lr * arm.lr_scale], steps=2, group_size=exp.group_size,
                        mode=arm.mode, groups_per_prompt=2, optimizer=exp.optimizer,
                        **dict(arm.hparams))
        assert bool(torch.isfinite(traj.metrics["reward"]).all()), arm.label
        assert int((traj.diverged_at >= 0).sum()) == 0, arm.label


def test_experiment_names_hold_every_experiment_and_figure():
    assert set(experiment_names()) == {*EXPERIMENTS, *FIGURES}
    assert {"E1", "E2", "E3", "E4", "E5", "E6", "E7"} <= set(experiment_names())


def test_pitfall_one_off_policy_reinforce_picks_arm_two_and_mirror_descent_arm_three():
    """Paper §3 Pitfall 1 as the E6 figure computes it (exact updates, π_0 = μ)."""
    paths = pitfall_paths(PitfallConfig(steps=200))
    finals = {label.split(" (")[0].split(",")[0] + ("" if "on-policy" not in label else
                                                    " on-policy"): pi[-1]
              for label, pi in paths.items()}
    assert int(finals["REINFORCE"].argmax()) == 1 and float(finals["REINFORCE"][1]) > 0.99
    assert int(finals["mirror descent on the same data"].argmax()) == 2
    assert int(finals["REINFORCE on-policy"].argmax()) == 2
    # clipping stops the off-policy drift near μ instead of following it to arm 2
    assert float((finals["REC-OneSide-NoIS"] - torch.tensor(MU, dtype=torch.float64))
                 .abs().max()) < 0.2
    for pi in paths.values():
        torch.testing.assert_close(pi[0], torch.tensor(MU, dtype=torch.float64))


def test_pitfall_writes_its_table_and_figure(tmp_path):
    text, files = run_pitfall(tmp_path, PitfallConfig(steps=20))
    assert all(path.exists() and path.stat().st_size > 0 for path in files.values())
    assert "| REINFORCE, off-policy (data from μ) |" in text
    assert not list(tmp_path.glob("*.tmp*"))


def test_grlab_experiment_runs_a_figure_and_rejects_an_unknown_key(grlab, tmp_path):
    code, out = grlab("experiment", "E6", "--out", str(tmp_path))
    assert code == 0 and "pitfall.png" in out.replace("\n", "")
    assert "E6 [1/1] Pitfall 1" in out  # off a terminal, progress is a plain line
    code, out = grlab("experiment", "E99")  # tyro lists the valid keys
    assert code == 2 and "E99" in out and "E7" in out
