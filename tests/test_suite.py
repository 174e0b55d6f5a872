"""The problem suite (``simulator.suite``), the findings (``simulator.findings``), the IS-ratio
metrics of a trajectory, and ``--suite`` / ``--family`` on the command line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import simulator.reports
from simulator.curves import Curve
from simulator.dynamics import (
    BanditProblem,
    Schedule,
    Trajectory,
    draw_instance,
    simulate,
    weighted_quantiles,
)
from simulator.experiments import ARMS, Experiment, default_comparison
from simulator.findings import FINDINGS, summary_markdown
from simulator.lab_names import DEFAULT_FAMILY, FAMILY_NAMES
from simulator.reports import Report, summarise
from simulator.suite import FAMILIES

# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def test_the_torch_free_names_are_the_registry():
    assert tuple(FAMILIES) == FAMILY_NAMES and DEFAULT_FAMILY in FAMILIES


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_seed_draws_the_same_instance_every_time_and_seeds_differ(name):
    fam = FAMILIES[name]
    a, b, other = fam.instance(3), fam.instance(3), fam.instance(4)
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.theta0, b.theta0)
    assert (a.features is None) == (fam.problem.policy == "tabular")
    if a.features is not None:
        assert torch.equal(a.features, b.features)
    assert not torch.equal(a.theta0, other.theta0)


def test_simulate_trains_on_the_instance_the_family_draws():
    """Step 0's reward is E_π0[r] of ``Family.instance``, computed here by hand."""
    fam = FAMILIES["representable"]
    inst = fam.instance(2)
    logits = torch.einsum("pnd,d->pn", inst.features, inst.theta0)
    by_hand = (torch.softmax(logits, -1) * inst.rewards).sum(-1).mean()
    trajectory = simulate(fam.problem, "reinforce", seeds=[2], steps=1)
    assert float(trajectory.metrics["reward"][0, 0]) == pytest.approx(float(by_hand), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_the_representable_features_span_every_logit(seed):
    """Φ [P·n, d] has rank P·n: every logit table is Φ·w for some w."""
    fam = FAMILIES["representable"]
    phi = fam.instance(seed).features
    p, n, d = phi.shape
    assert d >= p * n and int(torch.linalg.matrix_rank(phi.reshape(p * n, d))) == p * n
    assert fam.representable


def test_the_capacity_limited_features_do_not():
    fam = FAMILIES["capacity-limited"]
    phi = fam.instance(0).features
    assert int(torch.linalg.matrix_rank(phi.reshape(-1, phi.shape[-1]))) == 16 < phi[..., 0].numel()
    assert not fam.representable and FAMILIES["tabular"].representable


def test_on_policy_reinforce_and_grpo_reach_the_optimum_of_the_representable_family():
    """The reason it is the default: on-policy training reaches J* (here 1: one correct answer
    per prompt) on every seed, so on-policy is the reference stale runs are judged against."""
    fam = FAMILIES["representable"]
    for loss in ("reinforce", "grpo"):
        trajectory = simulate(fam.problem, loss, seeds=range(5), steps=150, optimizer="adam",
                              group_size=fam.group_size)
        final, optimum = trajectory.metrics["reward"][-1], trajectory.metrics["optimum"][-1]
        assert torch.all(optimum == 1.0) and torch.all(final > 0.99), (loss, final)


def test_retarget_sets_the_problem_group_size_and_sampled_groups():
    exp = default_comparison(("reinforce", "grpo"), ("on-policy",), seeds=2, steps=2)
    sampled = FAMILIES["sampled"].retarget(exp)
    assert sampled.problem == FAMILIES["sampled"].problem and sampled.group_size == 4
    assert {c.groups for c in sampled.arms} == {"sampled"}
    assert [c.key for c in sampled.arms] == ["reinforce", "grpo"]
    tree = FAMILIES["tree-depth-2"].retarget(exp)
    assert tree.group_size == 3 and tree.problem.depth == 2
    assert {c.groups for c in tree.arms} == {"expected"}


# --------------------------------------------------------------------------------------------
# The IS-ratio metrics
# --------------------------------------------------------------------------------------------


def test_weighted_quantiles_by_hand():
    values = torch.tensor([[3.0, 1.0, 2.0], [100.0, 1.0, -5.0]], dtype=torch.float64)
    weights = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]], dtype=torch.float64)
    # row 0 sorted: 1 (0.5), 2 (0.3), 3 (0.2): cumulative 0.5, 0.8, 1.0
    # row 1: only 1 carries weight; 100 and −5 are never sampled
    q = weighted_quantiles(values, weights, [0.05, 0.5, 0.6, 0.95])
    assert q[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0]
    assert q[:, 1].tolist() == [1.0, 1.0, 1.0, 1.0]


def _hand_quantile(pairs, q):
    total = 0.0
    for value, weight in sorted(pairs):
        total += weight
        if total >= q - 1e-12:
            return value
    return sorted(pairs)[-1][0]


def test_ratio_metrics_of_a_step_match_a_hand_computation():
    """Offline, one step of SGD at a large rate on a tabular bandit: ρ = π₁/π₀ per response,
    weighted by π₀ (the behaviour), prompts equally."""
    problem = BanditProblem(prompts=2, responses=4, policy="tabular")
    trajectory = simulate(problem, "reinforce", seeds=[0], schedules=[Schedule(offline=True)],
                          lrs=[3.0], steps=1)
    pi0 = torch.softmax(draw_instance(problem, 0).theta0, -1)
    pi1 = torch.softmax(trajectory.params[0], -1)
    pairs = [(float(pi1[p, y] / pi0[p, y]), float(pi0[p, y]) / 2)
             for p in range(2) for y in range(4)]
    m = trajectory.metrics
    for name, q in (("ratio_q05", 0.05), ("ratio_q50", 0.5), ("ratio_q95", 0.95)):
        assert float(m[name][1, 0]) == pytest.approx(_hand_quantile(pairs, q), rel=1e-12)
        assert float(m[name][0, 0]) == 1.0  # step 0: π = π_old
    far = sum(w for rho, w in pairs if abs(rho - 1) > 0.2)
    assert 0 < far < 1 and float(m["ratio_far"][1, 0]) == pytest.approx(far, rel=1e-12)


def test_the_table_reports_kl_clipfrac_and_the_ratio_beside_reward():
    exp = default_comparison(("grpo",), ("on-policy", "offline"), seeds=2, steps=3)
    report = simulator.reports.run_experiment(exp)
    rows = report.rows
    trajectory = report.trajectories["GRPO"]
    offline = trajectory.metrics["clipfrac"][1:].mean(0).reshape(2, 2)[:, 1].mean()
    assert rows[1].setting == "offline" and rows[1].clipfrac == pytest.approx(float(offline))
    assert rows[0].clipfrac == 0.0  # on-policy every ratio is 1 when the loss is evaluated
    text = simulator.reports.markdown_table(report)
    assert "Off-policyness" in text and f"clip {rows[1].clipfrac:.0%}" in text


# --------------------------------------------------------------------------------------------
# Findings on hand-built reports
# --------------------------------------------------------------------------------------------

SETTINGS = ("on-policy", "offline")


def _report(curves: dict[str, list[tuple[float, float, float, float]]]) -> Report:
    """A report whose curve ``key`` has, per seed, (on-policy peak, on-policy final, offline
    peak, offline final); each run's reward is 0 → peak → final (3 steps)."""
    seeds = len(next(iter(curves.values())))
    arms = {key: key if isinstance(key, Curve) else ARMS[key] for key in curves}
    exp = Experiment("hand", "hand-built", "-", tuple(arms.values()),
                     settings=SETTINGS, seeds=seeds, steps=2)
    trajectories = {}
    for key, runs in curves.items():
        reward = torch.zeros(3, seeds * 2, dtype=torch.float64)
        for s, (on_peak, on_final, off_peak, off_final) in enumerate(runs):
            reward[1:, 2 * s] = torch.tensor([on_peak, on_final])
            reward[1:, 2 * s + 1] = torch.tensor([off_peak, off_final])
        metrics = {"reward": reward, "optimum": torch.ones_like(reward)}
        metrics.update({name: torch.zeros_like(reward) for name in simulator.reports.OFF_POLICY})
        trajectories[arms[key].label] = Trajectory(arms[key].loss, [], metrics,
                                                   torch.full((seeds * 2,), -1), reward)
    rows = [row for c in exp.arms for row in summarise(exp, c.label, trajectories[c.label])]
    return Report(exp, trajectories, rows)


def _check(key: str, report: Report):
    return next(f for f in FINDINGS if f.key == key).check(report)


def _steady(on: float, off: float, n: int = 5, jitter: float = 0.0):
    """n seeds that end at their peak: on-policy ``on``, offline ``off`` (± jitter by seed)."""
    return [(on, on, off + jitter * (s - 2), off + jitter * (s - 2)) for s in range(n)]


def test_stale_reinforce_collapses_true_false_and_undecided():
    collapsing = [(0.9, 0.9, 0.8, 0.5), *_steady(0.9, 0.8, 4)]
    assert _check("stale-reinforce-collapses", _report({"reinforce": collapsing})).holds is True
    verdict = _check("stale-reinforce-collapses", _report({"reinforce": _steady(0.9, 0.8)}))
    assert verdict.holds is False and "offline 0/5" in verdict.evidence
    assert _check("stale-reinforce-collapses", _report({"grpo": _steady(0.9, 0.8)})).holds is None


def test_clipped_never_collapse_names_the_run_that_did():
    one = [(0.9, 0.9, 0.8, 0.65), *_steady(0.9, 0.8, 4)]  # dropped 0.15 > 0.1
    verdict = _check("clipped-never-collapse", _report({"grpo": one,
                                                        "rec-oneside-nois": _steady(0.9, 0.8)}))
    assert verdict.holds is False and "grpo offline 1/5" in verdict.evidence
    fine = [(0.9, 0.9, 0.8, 0.75), *_steady(0.9, 0.8, 4)]  # dropped 0.05: not a collapse
    assert _check("clipped-never-collapse", _report({"grpo": fine})).holds is True


def test_is_equals_nois_by_the_paired_interval():
    nois = _steady(0.9, 0.6)
    noisy = [(0.9, 0.9, 0.6 + d, 0.6 + d) for d in (0.02, -0.02, 0.01, -0.01, 0.0)]
    shifted = [(0.9, 0.9, 0.7 + d, 0.7 + d) for d in (0.01, -0.01, 0.0, 0.005, -0.005)]
    assert _check("is-equals-nois", _report({"rec-oneside-is": noisy,
                                             "rec-oneside-nois": nois})).holds is True
    verdict = _check("is-equals-nois", _report({"rec-oneside-is": shifted,
                                                "rec-oneside-nois": nois}))
    assert verdict.holds is False and "offline +0.100" in verdict.evidence


def test_wide_clip_offline():
    narrow = _steady(0.9, 0.6)
    assert _check("wide-clip-offline", _report({"rec-oneside-nois-wide": _steady(0.9, 0.7),
                                                "rec-oneside-nois": narrow})).holds is True
    assert _check("wide-clip-offline", _report({"rec-oneside-nois-wide": _steady(0.9, 0.5),
                                                "rec-oneside-nois": narrow})).holds is False


def test_clipped_track_on_policy_and_stale_below_on_policy():
    tracking = _steady(0.9, 0.9, jitter=0.01)
    assert _check("clipped-track-on-policy", _report({"grpo": tracking})).holds is True
    behind = _steady(0.9, 0.7, jitter=0.01)
    verdict = _check("clipped-track-on-policy", _report({"grpo": behind}))
    assert verdict.holds is False and "grpo offline -0.200" in verdict.evidence
    assert _check("stale-below-on-policy", _report({"grpo": behind})).holds is True
    # the capacity-limited pattern: stale runs end clearly above on-policy
    above = _steady(0.55, 0.62, jitter=0.01)
    verdict = _check("stale-below-on-policy", _report({"grpo": above, "reinforce": behind}))
    assert verdict.holds is False and "grpo offline +0.070" in verdict.evidence


def test_a_difference_the_tables_cannot_show_is_none_but_a_steady_one_counts():
    """Both at 1.00 up to 1e-7 (a zero-width interval) is no difference; +0.01 on every seed
    is one (> NEGLIGIBLE = 0.005, and its interval excludes 0)."""
    level = _steady(1.0 - 1e-7, 1.0)
    assert _check("stale-below-on-policy", _report({"grpo": level})).holds is True
    assert _check("clipped-track-on-policy", _report({"grpo": level})).holds is True
    assert _check("is-equals-nois", _report({"rec-oneside-is": level,
                                             "rec-oneside-nois": _steady(1.0, 1.0)})).holds
    steady = _steady(0.9, 0.91)
    assert _check("stale-below-on-policy", _report({"grpo": steady})).holds is False
    assert _check("clipped-track-on-policy", _report({"grpo": steady})).holds is False


def test_the_summary_has_every_finding_and_family():
    report = _report({"reinforce": _steady(0.9, 0.8), "grpo": _steady(0.9, 0.8)})
    text = summary_markdown([("one", report), ("two", report)])
    for finding in FINDINGS:
        assert f"## {finding.statement}" in text and finding.rule in text
    assert text.count("| one |") == len(FINDINGS) == text.count("| two |")


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the user error was reported")

    monkeypatch.setattr(simulator.reports, "simulate", refuse)


@pytest.fixture
def no_plots(monkeypatch):
    import simulator.plots

    monkeypatch.setattr(simulator.plots, "plot_curves",
                        lambda report, path: path.write_bytes(b"stand-in"))


MISUSES = {
    "family typo": (("compare", "--family", "tabluar"),
                    "unknown --family 'tabluar'; did you mean 'tabular'?"),
    "suite and family": (("compare", "--suite", "--family", "tabular"),
                         "--suite runs every family and --family one of them: give one"),
    "family and env": (("compare", "--family", "tabular", "--env", "tree"),
                       "--env and --policy choose the problem, and so do --family and --suite"),
    "experiment family typo": (("experiment", "E1", "--family", "tre-depth-1"),
                               "did you mean 'tree-depth-1'?"),
    "figure on a family": (("experiment", "E6", "--suite"),
                           "experiment E6 is a figure of the exact lab on its own problem"),
}


@pytest.mark.parametrize("case", sorted(MISUSES))
def test_a_family_error_is_one_line_and_exit_2(case, grlab_split, no_work, tmp_path):
    argv, expected = MISUSES[case]
    code, out, err = grlab_split(*argv, "--out", str(tmp_path / "o"))
    assert code == 2 and "Traceback" not in out + err
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "o").exists()


def test_family_writes_its_table_in_its_folder_and_the_summary(grlab_split, no_plots, tmp_path):
    code, out, _err = grlab_split("compare", "--family", "tree-depth-1", "--losses", "reinforce",
                                  "grpo", "--settings", "on-policy", "offline", "--seeds", "2",
                                  "--steps", "3", "--out", str(tmp_path))
    assert code == 0
    table = (tmp_path / "tree-depth-1" / "table.md").read_text()
    assert "depth=1" in table and "group size 3" in table
    header = (tmp_path / "tree-depth-1" / "table.csv").read_text().splitlines()[0]
    assert "kl_behavior" in header and "ratio_q95" in header and "ratio_far" in header
    summary = (tmp_path / "summary.md").read_text()
    assert "| tree-depth-1 |" in summary and str(tmp_path / "summary.md") in out


def test_the_default_comparison_runs_on_the_representable_family(grlab_split, no_plots,
                                                                 tmp_path):
    code, _out, _err = grlab_split("compare", "--losses", "grpo", "--settings", "on-policy",
                                   "--seeds", "2", "--steps", "2", "--out", str(tmp_path))
    table = (tmp_path / "table.md").read_text()
    assert code == 0 and "features=64" in table and "representable" in table
    code, _out, _err = grlab_split("compare", "--policy", "tabular", "--losses", "grpo",
                                   "--settings", "on-policy", "--seeds", "2", "--steps", "2",
                                   "--out", str(tmp_path / "t"))
    assert code == 0 and "policy='tabular'" in (tmp_path / "t" / "table.md").read_text()


def test_experiment_on_a_family_keeps_its_curves(grlab_split, no_plots, monkeypatch, tmp_path):
    import simulator.experiments

    small = dataclasses.replace(simulator.experiments.EXPERIMENTS["E1"], seeds=2, steps=2,
                                settings=("on-policy",))
    monkeypatch.setattr(simulator.experiments, "EXPERIMENTS",
                        {**simulator.experiments.EXPERIMENTS, "E1": small})
    code, _out, _err = grlab_split("experiment", "E1", "--family", "sampled", "--out",
                                   str(tmp_path))
    assert code == 0
    table = (tmp_path / "sampled" / "table.md").read_text()
    assert "(family: sampled)" in table and "REC-OneSide-NoIS (0.6, 2.0)" in table


def test_collapse_findings_read_curves_by_their_loss_not_their_key():
    """E3's curves are keyed by learning rate ("grpo-lr10"): a collapsing clipped curve of any
    key breaks "clipped losses never collapse", a REINFORCE curve of any key is read, and a
    clipped loss run with clip="none" is not a clipped curve."""
    collapsing = [(0.9, 0.9, 0.8, 0.5), *_steady(0.9, 0.8, 4)]
    fast_grpo = Curve.of("grpo-lr10", "GRPO lr×10", "grpo", lr_scale=10.0)
    fast_reinforce = Curve.of("reinforce-lr2", "REINFORCE lr×2", "reinforce", lr_scale=2.0)
    unclipped = Curve.of("nois-unclipped", "REC-OneSide-NoIS, no clip", "rec-oneside-nois",
                         clip="none")
    report = _report({fast_grpo: collapsing, fast_reinforce: collapsing,
                      unclipped: collapsing})
    never = _check("clipped-never-collapse", report)
    assert never.holds is False and "grpo-lr10 offline 1/5" in never.evidence
    assert "nois-unclipped" not in never.evidence
    assert _check("stale-reinforce-collapses", report).holds is True
    steady = _report({fast_grpo: _steady(0.9, 0.8), unclipped: collapsing})
    assert _check("clipped-never-collapse", steady).holds is True
    assert _check("stale-reinforce-collapses", steady).holds is None
