"""``grlab atlas``: its numbers are the exact engines' numbers, what must hold on-policy and under
untruncated importance sampling holds, the cache is reused unchanged, and the command's errors
are one line naming the flag."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import simulator.atlas as atlas
from simulator.atlas import AtlasConfig, groups_needed, level_policies, make_testbed, run_atlas
from simulator.exact import expected_gradient, gradient_covariance

TINY = AtlasConfig(testbeds=("bandit-graded", "tree-graded"), losses=("reinforce", "grpo"),
                   corrections=("none", "tis-token"),
                   levels=("on-policy", "stale-4", "temp-0.7"), group_size=3, instances=1)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    return run_atlas(TINY, tmp_path_factory.mktemp("atlas"))


def _row(rows, name, level, loss, correction):
    (row,) = [r for r in rows if (r.testbed, r.level, r.loss, r.correction)
              == (name, level, loss, correction)]
    return row


@pytest.mark.parametrize(("name", "level"), [("tree-graded", "stale-4"),
                                             ("bandit-graded", "temp-0.7")])
def test_a_cell_is_the_engines_expected_gradient_and_covariance(tiny_rows, name, level):
    """Recompute one cell's columns from direct engine calls and the definitions."""
    env = make_testbed(name, TINY)
    history = atlas.trajectory(env, TINY)
    theta, old, mu = level_policies(env, history, level)
    k = TINY.group_size
    kw = {"anchor": old, "corrections": ("tis-token",)}
    mean = expected_gradient(env, theta, mu, "grpo", k, **kw).flatten()
    cov = gradient_covariance(env, theta, mu, "grpo", k, **kw)
    fresh = atlas.policy_behavior(env, theta)
    on_kw = {"anchor": fresh, "corrections": ("tis-token",)}
    on_mean = expected_gradient(env, theta, fresh, "grpo", k, **on_kw).flatten()
    on_cov = gradient_covariance(env, theta, fresh, "grpo", k, **on_kw)
    theta_req = theta.clone().requires_grad_()
    (grad_j,) = torch.autograd.grad((env.sequence_probs(theta_req) * env.rewards).sum(),
                                    theta_req)
    grad_j = grad_j.flatten()
    row = _row(tiny_rows, name, level, "grpo", "tis-token")
    scale = on_mean.norm()
    assert row.rel_bias == pytest.approx(float((mean - on_mean).norm() / scale), rel=1e-9)
    assert row.rel_std == pytest.approx(float(cov.trace().sqrt() / scale), rel=1e-9)
    assert row.rel_mse == pytest.approx(float(((mean - on_mean).norm() ** 2
                                               + cov.trace() / TINY.batch) / scale ** 2),
                                        rel=1e-9)
    assert row.cos_J == pytest.approx(float(-mean @ grad_j / mean.norm() / grad_j.norm()),
                                      rel=1e-9)
    assert row.ratio_J == pytest.approx(float(mean.norm() / grad_j.norm()), rel=1e-9)
    assert row.ess == pytest.approx(float(on_cov.trace() / cov.trace()), rel=1e-9)
    gap = mean - on_mean
    u = gap / gap.norm()
    assert row.n_vs_onpolicy == pytest.approx(
        float(7.84887 * (u @ (cov + on_cov) @ u) / gap.norm() ** 2), rel=1e-4)


def test_on_policy_reinforce_is_the_true_gradient_times_one_minus_one_over_k(tiny_rows):
    """On-policy, the group-mean baseline removes 1/K of each sample's own reward and nothing
    else (the others are independent, their score has mean 0): E[∇loss] = −(1 − 1/K)·∇J.
    On a bandit (one token, no length coupling) that is exact: cos 1, norm ratio 1 − 1/K,
    zero bias, and every correction is the identity (all weights 1, nothing masked)."""
    for correction in TINY.corrections:
        row = _row(tiny_rows, "bandit-graded", "on-policy", "reinforce", correction)
        assert row.cos_J == pytest.approx(1.0, abs=1e-12)
        assert row.ratio_J == pytest.approx(1 - 1 / TINY.group_size, rel=1e-12)
        assert row.rel_bias == 0.0 and row.kl_mu_pi == 0.0 and row.ess_is == pytest.approx(1)
        assert math.isinf(row.n_vs_onpolicy)


def test_untruncated_sequence_is_against_the_current_policy_removes_staleness(tmp_path):
    """With weight π_θ(y)/μ(y) on each row (ratio='current', no cap), E_μ[w_i(r_i − r̄)∇log π_i]
    = E_π[r∇log π] − (1/K)·E_π[r∇log π] (r_j, j ≠ i, independent of the score): REINFORCE's
    fresh-data update at every staleness; uncorrected it is biased."""
    config = AtlasConfig(testbeds=("bandit-binary", "bandit-graded"), losses=("reinforce",),
                         corrections=("none", "is:level=sequence,ratio=current,high=1e300"),
                         levels=("stale-1", "stale-16", "noise-0.3"), group_size=3)
    rows = run_atlas(config, tmp_path)
    for row in rows:
        if row.correction == "none" and row.level != "on-policy":
            assert row.rel_bias > 1e-3
        elif row.correction != "none":
            assert row.rel_bias < 1e-10, row


def test_groups_needed_by_hand():
    """1-D: gap 1, variances 1 and 1: n = (z_.975 + z_.8)²·2 ≈ 7.849·2."""
    one = torch.ones(1, 1, dtype=torch.float64)
    n = groups_needed(torch.ones(1, dtype=torch.float64), one, torch.zeros(1, dtype=torch.float64),
                      one)
    assert n == pytest.approx(2 * 7.8489, rel=1e-4)
    assert math.isinf(groups_needed(torch.ones(2), torch.eye(2), torch.ones(2), torch.eye(2)))


def test_a_cached_rerun_computes_nothing_and_gives_the_same_rows(tmp_path, monkeypatch):
    config = AtlasConfig(testbeds=("bandit-binary",), losses=("grpo",),
                         corrections=("none", "icepop"), levels=("stale-1", "top-k-2"),
                         instances=1)
    first = run_atlas(config, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a cached cell")

    monkeypatch.setattr(atlas, "compute_cell", refuse)
    monkeypatch.setattr(atlas, "trajectory", refuse)
    again = run_atlas(config, tmp_path)
    assert again == first
    assert atlas.table_csv(again) == atlas.table_csv(first)


def test_the_command_writes_its_files_at_tiny_size(grlab, tmp_path):
    code, out = grlab("atlas", "--testbeds", "bandit-binary", "--losses", "reinforce",
                      "--corrections", "tis-seq", "--levels", "stale-4", "--instances", "2",
                      "--out", str(tmp_path))
    assert code == 0, out
    for name in ("table.md", "table.csv", "map-bandit-binary.png", "bias_vs_kl.png",
                 "mse_vs_batch.png"):
        assert (tmp_path / name).exists()
    lines = (tmp_path / "table.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2  # 2 instances × (on-policy, stale-4) × (none, tis-seq)
    assert {line.split(",")[1] for line in lines[1:]} == {"0", "1"}


@pytest.mark.parametrize(("argv", "flag"), [
    (("--levels", "stale-x"), "--levels"),
    (("--levels", "stale-99"), "--levels"),
    (("--losses", "nope"), "--losses"),
    (("--corrections", "tis-nope"), "--corrections"),
    (("--group-size", "1"), "--group-size"),
    (("--levels", "stale-4+stale-1"), "--levels"),
    (("--levels", "noise-0.3+stale-4"), "--levels"),
    (("--levels", "stale-22+mix-0.5"), "--levels"),
    (("--instances", "0"), "--instances"),
    (("--steps", "0"), "--steps"),
])
def test_a_bad_flag_is_one_line_naming_it(grlab_split, tmp_path, argv, flag):
    code, out, err = grlab_split("atlas", *argv, "--out", str(tmp_path))
    assert code == 2 and "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err
    assert not (tmp_path / "cells").exists()


def test_help_fits_80_columns(grlab_columns):
    code, out, _err = grlab_columns(80, "atlas", "--help")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "--levels" in out and "stale-D" in out


def test_groups_needed_gives_the_promised_power_on_sampled_groups():
    """Draw n = ⌈groups_needed⌉ groups from each of two cells (REINFORCE under noise-0.3 and
    on-policy), 400 times, and z-test the gap along its direction: the rejection rate must be
    the normal-theory power at that n (≈ 0.8) within 4 binomial standard errors."""
    from scipy.stats import norm

    from simulator.exact import sampled_gradient
    from simulator.policies import policy_behavior

    config = AtlasConfig(testbeds=("bandit-graded",))
    env = make_testbed("bandit-graded", config)
    theta, old, mu = level_policies(env, atlas.trajectory(env, config), "noise-0.3")
    fresh = policy_behavior(env, theta)
    k = config.group_size
    ma = expected_gradient(env, theta, mu, "reinforce", k, anchor=old).flatten()
    ca = gradient_covariance(env, theta, mu, "reinforce", k, anchor=old)
    mb = expected_gradient(env, theta, fresh, "reinforce", k, anchor=fresh).flatten()
    cb = gradient_covariance(env, theta, fresh, "reinforce", k, anchor=fresh)
    n = math.ceil(groups_needed(ma, ca, mb, cb))
    assert 20 < n < 500  # large enough for the normal approximation, small enough to sample
    u = (ma - mb) / (ma - mb).norm()
    sd = math.sqrt(float(u @ (ca + cb) @ u) / n)
    shift = float((ma - mb).norm()) / sd
    power = norm.cdf(shift - norm.ppf(0.975)) + norm.cdf(-shift - norm.ppf(0.975))
    g = torch.Generator().manual_seed(0)
    repeats, hits = 400, 0
    for _ in range(repeats):
        a, _ = sampled_gradient(env, theta, mu, "reinforce", k, n, g, anchor=old)
        b, _ = sampled_gradient(env, theta, fresh, "reinforce", k, n, g, anchor=fresh)
        hits += abs(float(u @ (a - b).flatten()) / sd) > norm.ppf(0.975)
    assert abs(hits / repeats - power) < 4 * math.sqrt(power * (1 - power) / repeats)


def test_a_corrupt_cache_entry_is_recomputed_alone(tmp_path):
    config = AtlasConfig(testbeds=("bandit-binary",), losses=("reinforce",),
                         corrections=("none", "tis-token"), levels=("mix-0.5",),
                         instances=1)
    first = run_atlas(config, tmp_path)
    entries = sorted((tmp_path / "cells").glob("bandit-binary-reinforce-*.json"))
    assert len(entries) == 2
    entries[0].write_text("{truncated")
    untouched = entries[1].stat().st_mtime_ns
    assert run_atlas(config, tmp_path) == first
    assert entries[1].stat().st_mtime_ns == untouched


def test_the_kl_regularised_target_is_grad_j_at_its_anchor_and_differs_when_stale(tmp_path):
    """cos_T/ratio_T compare with ∇[J − τ·KL(π_θ‖π_old)]: where π_old = π_θ (on-policy, a
    mismatched sampler) that is ∇J, so cos_T = cos_J; at a stale level the KL term pulls
    towards π_old, checked against the softmax closed form on the bandit,
    ∇_z KL(π‖q) = π ⊙ (log π − log q − KL(π‖q))."""
    from simulator.atlas import trajectory

    config = AtlasConfig(testbeds=("bandit-graded",), losses=("reinforce",),
                         corrections=("none",), levels=("on-policy", "stale-4", "noise-0.3"),
                         tau=0.5, instances=1)
    env = make_testbed("bandit-graded", config)
    history = trajectory(env, config)
    theta, old, _ = level_policies(env, history, "stale-4")
    pi = torch.softmax(theta.to(torch.float64), dim=-1)
    kl = (pi * (pi.log() - old.log())).sum(-1, keepdim=True)
    expected = env.reward_gradient(theta) - 0.5 * pi * (pi.log() - old.log() - kl)
    torch.testing.assert_close(env.reward_gradient(theta, anchor=old, tau=0.5), expected,
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="anchor"):
        env.reward_gradient(theta, tau=0.5)
    rows = run_atlas(config, tmp_path)
    for row in rows:
        if row.level in ("on-policy", "noise-0.3"):
            assert row.cos_T == pytest.approx(row.cos_J, abs=1e-12)
        else:
            assert abs(row.cos_T - row.cos_J) > 1e-6


def test_runs_needed_by_hand():
    """Gap (1, 0), each arm's group covariance diag(2, 5): along the gap the two variances
    add to 4, so n = (z_.975 + z_.8)²·4/1² groups; a run of S = 10 steps of B = 2 groups
    averages 20 groups, so n/20 runs."""
    from simulator.atlas import runs_needed

    z = 1.959963984540054 + 0.8416212335729143
    cov = torch.diag(torch.tensor([2.0, 5.0], dtype=torch.float64))
    n = groups_needed(torch.tensor([1.0, 0.0], dtype=torch.float64), cov,
                      torch.zeros(2, dtype=torch.float64), cov)
    assert n == pytest.approx(z ** 2 * 4, rel=1e-12)
    assert runs_needed(n, steps=10, batch=2) == pytest.approx(z ** 2 * 4 / 20, rel=1e-12)
    assert math.isinf(runs_needed(math.inf, steps=10, batch=2))
    with pytest.raises(ValueError, match="steps"):
        runs_needed(n, steps=0, batch=2)
    with pytest.raises(ValueError, match="batch"):
        runs_needed(n, steps=10, batch=1.5)
    with pytest.raises(ValueError, match="groups"):
        runs_needed(math.nan, steps=10, batch=2)


def test_a_runs_column_is_its_groups_over_s_times_b(tmp_path):
    config = AtlasConfig(testbeds=("bandit-graded",), losses=("reinforce",),
                         corrections=("none", "tis-seq:ratio=current"), levels=("stale-4",),
                         steps=7, batch=3, instances=1)
    for row in run_atlas(config, tmp_path):
        assert row.runs_vs_onpolicy == pytest.approx(row.n_vs_onpolicy / 21, rel=1e-12)
        assert row.runs_vs_uncorrected == pytest.approx(row.n_vs_uncorrected / 21, rel=1e-12)


def test_the_default_comparisons():
    assert atlas.comparison_pairs(atlas.DEFAULT_LEVELS) == [
        ("on-policy", "stale-1"), ("on-policy", "stale-4"), ("on-policy", "stale-16"),
        ("stale-1", "stale-4"), ("stale-4", "stale-16"),
        ("stale-4", "stale-4+noise-0.3"), ("stale-4", "stale-4+bf16")]


def test_a_comparison_is_groups_needed_between_its_two_levels(tmp_path):
    """stale-1 against stale-4 from direct engine calls; on-policy against stale-4 is the
    row's n_vs_onpolicy."""
    config = AtlasConfig(testbeds=("tree-binary",), losses=("grpo",), corrections=("none",),
                         levels=("stale-1", "stale-4"), steps=5, batch=2, instances=1)
    rows = run_atlas(config, tmp_path)
    found = {(c.a, c.b): c for c in atlas.level_comparisons(config, tmp_path)}
    env = make_testbed("tree-binary", config)
    history = atlas.trajectory(env, config)
    moments = {}
    for level in ("on-policy", "stale-1", "stale-4"):
        theta, old, mu = level_policies(env, history, level)
        moments[level] = (expected_gradient(env, theta, mu, "grpo", 4, anchor=old).flatten(),
                          gradient_covariance(env, theta, mu, "grpo", 4, anchor=old))
    n = groups_needed(*moments["stale-1"], *moments["stale-4"])
    assert found[("stale-1", "stale-4")].groups == pytest.approx(n, rel=1e-9)
    assert found[("stale-1", "stale-4")].runs == pytest.approx(n / 10, rel=1e-9)
    assert found[("stale-1", "stale-4")].rel_gap == pytest.approx(
        float((moments["stale-1"][0] - moments["stale-4"][0]).norm()
              / moments["on-policy"][0].norm()), rel=1e-9)
    assert found[("on-policy", "stale-4")].groups == pytest.approx(
        _row(rows, "tree-binary", "stale-4", "grpo", "none").n_vs_onpolicy, rel=1e-12)


def test_a_combined_level_has_three_policies_and_its_correction_leaves_the_staleness():
    """stale-4+noise-0.3: π_old = π_{θ_{T−4}}, μ = that policy's logits plus 0.3·ε (built
    here by hand). REINFORCE without a baseline, whose update is linear in each response:
    the untruncated sequence weight π_old/μ turns sampling from μ into sampling from π_old
    exactly, so the corrected update equals stale-4's uncorrected one — the staleness stays
    — and differs from on-policy."""
    from simulator.policies import policy_behavior

    config = AtlasConfig(testbeds=("tree-graded",), seed=3)
    env = make_testbed("tree-graded", config)
    history = atlas.trajectory(env, config)
    theta, old, mu = level_policies(env, history, "stale-4+noise-0.3", seed=3)
    eps = torch.randn(history[-5].shape, generator=torch.Generator().manual_seed(20_003),
                      dtype=torch.float64)
    torch.testing.assert_close(theta, history[-1], rtol=0, atol=0)
    torch.testing.assert_close(old, policy_behavior(env, history[-5]), rtol=0, atol=0)
    torch.testing.assert_close(mu, policy_behavior(env, history[-5] + 0.3 * eps), rtol=0,
                               atol=0)
    pi = policy_behavior(env, theta)
    assert float((mu - old).abs().max()) > 1e-3 and float((old - pi).abs().max()) > 1e-3
    plain = {"advantage": "none", "agg": "seq-mean-token-sum"}
    corrected = expected_gradient(env, theta, mu, "reinforce", 4, anchor=old,
                                  corrections="is:level=sequence,high=None", **plain)
    stale = expected_gradient(env, theta, old, "reinforce", 4, anchor=old, **plain)
    fresh = expected_gradient(env, theta, pi, "reinforce", 4, anchor=pi, **plain)
    torch.testing.assert_close(corrected, stale, rtol=1e-10, atol=1e-13)
    assert float((stale - fresh).norm()) > 0.05 * float(fresh.norm())
    assert atlas.level_age("stale-4+mix-0.5") == 8


def test_instances_are_seeds_and_the_table_gives_median_and_range(tmp_path):
    config = AtlasConfig(testbeds=("bandit-binary",), losses=("reinforce",),
                         corrections=("none",), levels=("stale-4",), instances=3, seed=5)
    rows = run_atlas(config, tmp_path)
    assert sorted({r.seed for r in rows}) == [5, 6, 7]
    alone = run_atlas(dataclasses.replace(config, seed=6, instances=1), tmp_path / "one")
    assert [r for r in rows if r.seed == 6] == alone
    picked = sorted(r.rel_bias for r in rows if r.level == "stale-4")
    assert picked[0] < picked[2]  # the instances differ
    (median,) = [r for r in atlas.median_rows(rows) if r.level == "stale-4"]
    assert median.rel_bias == picked[1]
    text = atlas.table_markdown(rows, config)
    fmt = atlas._fmt
    assert f"| {fmt(picked[1])} [{fmt(picked[0])}, {fmt(picked[2])}] |" in text
