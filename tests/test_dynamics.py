"""The off-policy lab: schedules, batching, optimisers, expected and sampled groups, reports."""

from __future__ import annotations

import math

import pytest
import torch

from simulator.dynamics import SETTINGS, BanditProblem, Problem, Schedule, _Optimizer, simulate
from simulator.experiments import Curve, Experiment, run_experiment, write_report

SMALL = Problem(env="bandit", prompts=2, responses=4, reward="binary", correct=1,
                policy="tabular")


@pytest.mark.parametrize(("schedule", "expected"), [
    (Schedule(), list(range(12))),
    (Schedule(sync_interval=4), [0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8]),
    (Schedule(sync_offset=3), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
    (Schedule(sync_interval=4, sync_offset=2), [0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8]),
    (Schedule(offline=True), [0] * 12),
])
def test_which_policy_produced_the_data_at_each_step(schedule, expected):
    """behavior_step(t) = ⌊max(t − d, 0)/m⌋·m: with m = 20 the staleness cycles 0..19, with
    d = 10 data are 10 updates old (the first 10 steps use the initial policy)."""
    assert [schedule.behavior_step(t) for t in range(12)] == expected


def test_the_paper_settings_have_the_paper_staleness():
    staleness = {name: [t - s.behavior_step(t) for t in range(60)]
                 for name, s in SETTINGS.items()}
    assert set(staleness["on-policy"]) == {0}
    assert staleness["sync-interval-20"][:40] == list(range(20)) * 2
    assert staleness["sync-offset-10"][10:] == [10] * 50
    assert staleness["offline"] == list(range(60))


def test_the_simulated_staleness_metric_follows_the_schedule():
    schedules = [Schedule(), Schedule(sync_interval=3), Schedule(sync_offset=2)]
    traj = simulate(SMALL, "reinforce", seeds=[0], schedules=schedules, steps=7)
    got = traj.metrics["staleness"][1:].T.tolist()
    assert got == [[t - s.behavior_step(t) for t in range(7)] for s in schedules]


def test_stale_data_really_come_from_the_old_policy():
    """With sync_interval = 5 the KL to the behavior policy is 0 at the first step of each
    cycle's data (step 0 → θ_1 vs θ_0 is not 0, but the behavior at step 5 is θ_5)."""
    traj = simulate(SMALL, "reinforce", seeds=[0], schedules=[Schedule(sync_interval=5)],
                    steps=10, lrs=[0.5])
    kl = traj.metrics["kl_behavior"][1:, 0]  # after step t, KL(π_{t+1} ‖ μ_t)
    # within a cycle the policy drifts away from the fixed behavior: KL grows
    assert bool((kl[1:5] > kl[0:4]).all()) and bool((kl[6:10] > kl[5:9]).all())
    assert float(kl[5]) < float(kl[4])  # the refresh at step 5


def test_batched_runs_equal_runs_one_by_one():
    """R runs in one tiled computation give exactly the trajectories of R separate calls."""
    schedules = [Schedule(), Schedule(sync_interval=4), Schedule(offline=True)]
    batched = simulate(SMALL, "rec-oneside-is", seeds=[0, 1], schedules=schedules,
                       lrs=[0.3, 1.0], steps=12, optimizer="adam")
    index = 0
    for seed in (0, 1):
        for schedule in schedules:
            for lr in (0.3, 1.0):
                alone = simulate(SMALL, "rec-oneside-is", seeds=[seed], schedules=[schedule],
                                 lrs=[lr], steps=12, optimizer="adam")
                for key, values in alone.metrics.items():
                    torch.testing.assert_close(batched.metrics[key][:, index], values[:, 0],
                                               rtol=1e-10, atol=1e-12, msg=key)
                index += 1


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_the_batched_optimiser_is_torch_optim_per_run(kind):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 5, generator=g, dtype=torch.float64)
    lrs = torch.tensor([0.1, 0.01, 1.0], dtype=torch.float64)
    ours = _Optimizer(kind, lrs)
    refs = [p.clone().requires_grad_(True) for p in theta]
    torch_opts = [(torch.optim.SGD if kind == "sgd" else torch.optim.Adam)([p], lr=float(lr))
                  for p, lr in zip(refs, lrs, strict=True)]
    for _ in range(6):
        grad = torch.randn(3, 5, generator=g, dtype=torch.float64)
        theta = ours.step(theta, grad)
        for p, opt, row in zip(refs, torch_opts, grad, strict=True):
            p.grad = row.clone()
            opt.step()
    torch.testing.assert_close(theta, torch.stack([p.detach() for p in refs]))


@pytest.mark.parametrize("loss", ["grpo", "rec-ring-nois", "red-weight"])
def test_sampled_groups_agree_with_expected_groups_within_monte_carlo_error(loss):
    """One SGD step from θ_0: θ_1 − θ_0 = −lr·g is linear in the gradient, so the mean of θ_1
    over 1000 independent sampled runs (the same instance repeated as 1000 runs of one batched
    call, each drawing its own groups) must match the exact expected θ_1 within 5 standard
    errors in every coordinate; the standard errors are measured from the runs themselves."""
    exact = simulate(SMALL, loss, seeds=[0], steps=1, lrs=[1.0]).params[0]
    samples = simulate(SMALL, loss, seeds=[0] * 1000, steps=1, lrs=[1.0], groups="sampled",
                       groups_per_prompt=2).params
    mean = samples.mean(0)
    stderr = samples.std(0, correction=1) / math.sqrt(len(samples))
    assert float(stderr.max()) > 0  # the samples really vary
    z = ((mean - exact).abs() / stderr.clamp(min=1e-12)).max()
    assert float(z) < 5.0, float(z)


def test_sampled_groups_detect_a_wrong_expectation():
    """The same check has power: against the exact update of a different loss (REINFORCE
    instead of GRPO's std-normalised advantages) it fails by far more than 5 errors."""
    wrong = simulate(SMALL, "reinforce", seeds=[0], steps=1, lrs=[1.0]).params[0]
    samples = simulate(SMALL, "grpo", seeds=[0] * 1000, steps=1, lrs=[1.0], groups="sampled",
                       groups_per_prompt=2).params
    stderr = samples.std(0, correction=1) / math.sqrt(len(samples))
    assert float(((samples.mean(0) - wrong).abs() / stderr.clamp(min=1e-12)).max()) > 10


def test_a_diverging_run_is_frozen_reported_and_kept_in_the_averages(monkeypatch):
    """Inject a NaN gradient into one run at step 3: that run stops at its last finite
    parameters, diverged_at says 3, the other run trains on, and every metric stays finite."""
    import simulator.dynamics as dyn

    real = dyn._guarded_step
    calls = {"n": 0}

    def poisoned(opt, theta, grad, diverged_at, step):
        calls["n"] += 1
        if step == 3:
            grad = grad.clone()
            grad[1] = float("nan")
        return real(opt, theta, grad, diverged_at, step)

    monkeypatch.setattr(dyn, "_guarded_step", poisoned)
    traj = simulate(SMALL, "reinforce", seeds=[0], schedules=[Schedule(), Schedule()],
                    steps=6, lrs=[0.5])
    assert traj.diverged_at.tolist() == [-1, 3]
    reward = traj.metrics["reward"]
    assert torch.isfinite(reward).all()
    assert torch.equal(reward[3:, 1], reward[2, 1].expand(4))  # frozen after step 3
    assert not torch.equal(reward[3:, 0], reward[2, 0].expand(4))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sync_interval"):
        Schedule(sync_interval=0)
    with pytest.raises(TypeError, match="sync_offset"):
        Schedule(sync_offset=1.5)
    with pytest.raises(ValueError, match="env"):
        Problem(env="maze")
    with pytest.raises(ValueError, match="correct"):
        Problem(responses=4, correct=4)
    with pytest.raises(ValueError, match="lr"):
        simulate(SMALL, "reinforce", seeds=[0], lrs=[0.0], steps=1)
    with pytest.raises(ValueError, match="groups"):
        simulate(SMALL, "reinforce", seeds=[0], steps=1, groups="exact")
    with pytest.raises(KeyError, match="did you mean"):
        simulate(SMALL, "reinforse", seeds=[0], steps=1)
    with pytest.raises(TypeError, match="eps_hgih"):
        simulate(SMALL, "rec", seeds=[0], steps=1, eps_hgih=0.3)


def test_a_report_is_written_and_an_interrupted_run_resumes_from_its_cache(tmp_path):
    exp = Experiment("T", "tiny", "none", (Curve.of("reinforce", "REINFORCE"),
                                          Curve.of("grpo", "GRPO")),
                     problem=SMALL, settings=("on-policy", "offline"), seeds=2, steps=5)
    report = run_experiment(exp, tmp_path)
    paths = write_report(report, tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert "| REINFORCE |" in paths["markdown"].read_text()
    assert len(paths["csv"].read_text().splitlines()) == 1 + 2 * 2
    cached = sorted((tmp_path / "runs").glob("*.pt"))
    assert len(cached) == 2
    calls = []
    again = run_experiment(exp, tmp_path, on_step=lambda label, step: calls.append(label))
    assert calls == ["REINFORCE", "GRPO"]  # one call each: loaded, not retrained
    for label, traj in again.trajectories.items():
        torch.testing.assert_close(traj.metrics["reward"],
                                   report.trajectories[label].metrics["reward"])
    assert not list(tmp_path.glob("*.tmp"))


def test_clip_fraction_is_zero_on_policy_and_positive_when_stale_or_reused():
    """With one update per fresh batch ρ = 1 and nothing is clipped; stale data (offline) or
    several updates per batch move ρ out of [1 − ε, 1 + ε] and the metric must see it;
    REINFORCE never clips."""
    common = {"seeds": [0], "steps": 12, "optimizer": "adam", "lrs": [0.3]}
    fresh = simulate(SMALL, "rec-oneside-nois", **common)
    assert float(fresh.metrics["clipfrac"].abs().max()) == 0.0
    stale = simulate(SMALL, "rec-oneside-nois", schedules=[Schedule(offline=True)], **common)
    reused = simulate(SMALL, "rec-oneside-nois", updates_per_batch=4, **common)
    for traj in (stale, reused):
        assert float(traj.metrics["clipfrac"].max()) > 0.05
        assert float(traj.metrics["clipfrac"].max()) <= 1.0
    never = simulate(SMALL, "reinforce", schedules=[Schedule(offline=True)], **common)
    assert float(never.metrics["clipfrac"].abs().max()) == 0.0


def test_sampled_at_lists_the_steps_whose_data_a_sync_produces():
    """sync_interval 3, sync_offset 2: b(t) = ⌊max(t − 2, 0)/3⌋·3, so θ_0 produces the data of
    steps 0–4, θ_3 those of 5–7, θ_6 those of 8–10; θ_1 produces none (no sync at step 1)."""
    schedule = Schedule(sync_interval=3, sync_offset=2)
    assert schedule.sampled_at(0) == [0, 1, 2, 3, 4]
    assert schedule.sampled_at(3) == [5, 6, 7]
    assert schedule.sampled_at(1) == []
    assert Schedule().sampled_at(7) == [7]
    with pytest.raises(ValueError, match="offline"):
        Schedule(offline=True).sampled_at(0)


def test_a_problem_is_a_bandit_or_a_tree_each_with_its_own_fields():
    """``Problem(env=...)`` builds the member of the pair ``env`` names; a bandit has no tree
    fields and a tree no ``responses``, so a field of the other kind is refused by name."""
    from simulator.dynamics import BanditProblem, TreeProblem

    bandit, tree = Problem(responses=5), Problem(env="tree", vocab=2, depth=2)
    assert type(bandit) is BanditProblem and bandit == BanditProblem(responses=5)
    assert type(tree) is TreeProblem and tree.num_responses == TreeProblem(
        vocab=2, depth=2).num_responses == 3
    assert not hasattr(bandit, "vocab") and not hasattr(tree, "responses")
    with pytest.raises(TypeError, match="responses"):
        TreeProblem(responses=4)
    with pytest.raises(ValueError, match="env"):
        BanditProblem(env="tree")


def test_simulate_takes_a_built_loss_setup_as_it_takes_a_name_and_keywords():
    """The lab builds a curve's ``LossSetup`` once and hands it over: the same trajectory as
    the registered name with its keywords."""
    from simulator.groups import loss_setup

    common = {"seeds": [0, 1], "schedules": [Schedule(sync_interval=3)], "steps": 5,
              "lrs": [0.5]}
    named = simulate(SMALL, "rec", eps_high=0.3, advantage="mean", **common)
    built = simulate(SMALL, loss_setup("rec", {"eps_high": 0.3, "advantage": "mean"}), **common)
    assert named.loss == built.loss == "rec"
    for key, values in named.metrics.items():
        assert torch.equal(built.metrics[key], values), key


def test_snapshots_are_the_parameters_a_shorter_run_ends_with():
    """``snapshot_steps`` keeps θ after step t of one run: exactly what a run of t steps ends
    with (0: the start); a step past ``steps`` or below 0 is refused."""
    problem = BanditProblem(prompts=2, responses=3, policy="log-linear", features=4)
    common = {"seeds": [0, 1], "schedules": [SETTINGS["sync-interval-20"]], "lrs": [0.1],
              "group_size": 3, "optimizer": "adam"}
    long = simulate(problem, "reinforce", steps=7, snapshot_steps=[0, 3, 7], **common)
    assert sorted(long.snapshots) == [0, 3, 7]
    for t in (3, 7):
        short = simulate(problem, "reinforce", steps=t, **common)
        assert torch.equal(long.snapshots[t], short.params)
    assert not torch.equal(long.snapshots[0], long.snapshots[3])
    assert simulate(problem, "reinforce", steps=1, **common).snapshots == {}
    for bad in (8, -1):
        with pytest.raises(ValueError, match="snapshot_steps"):
            simulate(problem, "reinforce", steps=7, snapshot_steps=[bad], **common)
