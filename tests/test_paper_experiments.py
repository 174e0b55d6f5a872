"""The experiments as the paper ran them: each E-row's arms, learning-rate multiples, clip
values and settings are the paper's figure's (our notes on its figures), and an arm the figure
does not have is labelled "[ours]"."""

from __future__ import annotations

import dataclasses

import torch

from simulator.experiments import EXPERIMENTS, FIGURES
from simulator.lab_names import EXPERIMENT_KEYS

STALE = ("sync-interval-20", "sync-offset-10", "offline")


def _arms(key):
    """(loss, lr_scale, eps_low, eps_high) of each arm, and the labels."""
    out = {}
    for arm in EXPERIMENTS[key].arms:
        h = dict(arm.hparams)
        out[arm.label] = (arm.loss, arm.lr_scale, h.get("eps_low", 0.2), h.get("eps_high", 0.2))
    return out


def _paper_arms(key):
    return {label: v for label, v in _arms(key).items() if "[ours]" not in label}


def test_e1_has_the_papers_six_arms_its_three_stale_settings_and_on_policy_as_reference():
    exp = EXPERIMENTS["E1"]
    assert set(STALE) <= set(exp.settings) and "on-policy" in exp.settings
    assert sorted(v[0] for v in _arms("E1").values()) == sorted(
        ["reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-is",
         "rec-oneside-nois"])
    assert sorted((v[2], v[3]) for v in _arms("E1").values() if v[0].startswith("rec")) == [
        (0.2, 0.2), (0.2, 0.2), (0.6, 2.0), (0.6, 2.0)]


def test_e2_has_the_figures_arms_and_no_ring_is_unless_ours():
    paper = _paper_arms("E2")
    assert sorted(v[0] for v in paper.values()) == sorted(
        ["reinforce", "rec-twoside-nois", "rec-ring-nois", "rec-twoside-is", "grpo"])
    assert all((v[2], v[3]) == (0.2, 0.2) for v in paper.values())
    ring_is = [label for label, v in _arms("E2").items() if v[0] == "rec-ring-is"]
    assert all("[ours]" in label for label in ring_is)
    assert set(STALE) <= set(EXPERIMENTS["E2"].settings)


def test_e3_is_appendix_b4_at_sync_interval_20_only():
    exp = EXPERIMENTS["E3"]
    assert exp.settings == ("sync-interval-20",)
    got = sorted((v[0], v[1], v[2], v[3]) for v in _arms("E3").values())
    want = sorted([*((loss, s, 0.2, 0.2) for loss in ("grpo", "rec-oneside-nois")
                     for s in (2.0, 5.0, 10.0)),
                   ("rec-oneside-nois", 1.0, 0.6, 2.0), ("rec-oneside-nois", 2.0, 0.6, 2.0),
                   ("reinforce", 2.0, 0.2, 0.2)])
    assert got == want


def test_e3_base_lr_is_e3_at_a_third_of_the_step():
    base, low = EXPERIMENTS["E3"], EXPERIMENTS["E3-base-lr"]
    assert low.arms == base.arms and low.settings == base.settings
    assert low.lr == 0.03 and base.lr == 0.1


def test_e4_and_e5_compare_against_the_papers_wide_clip_and_label_clip_02_ours():
    for key in ("E4", "E5"):
        arms = _arms(key)
        assert ("rec-oneside-nois", 1.0, 0.6, 2.0) in _paper_arms(key).values(), key
        narrow = [label for label, v in arms.items()
                  if v[0] == "rec-oneside-nois" and (v[2], v[3]) == (0.2, 0.2)]
        assert narrow and all("[ours]" in label for label in narrow), key
    assert EXPERIMENTS["E5"].settings == ("on-policy", "sync-interval-20")
    assert {"reinforce", "red-drop", "red-weight"} <= {v[0] for v in _paper_arms("E5").values()}


def test_e8_is_the_toolace_style_rec_sweep():
    exp = EXPERIMENTS["E8"]
    assert exp.settings == ("sync-interval-20",) and exp.steps == 400
    assert "clipfrac" in exp.figures
    got = sorted((v[0], v[2], v[3]) for v in _arms("E8").values())
    assert got == sorted([
        ("rec-oneside-nois", 0.2, 0.25), ("rec-oneside-is", 0.2, 0.25),
        ("rec-ring-nois", 0.2, 0.25), ("rec-ring-nois", 0.6, 2.0),
        ("rec-oneside-nois", 0.6, 2.0),
        ("rec-twoside-nois", 0.2, 0.25), ("rec-twoside-nois", 0.6, 2.0)])


def test_every_new_key_is_a_command_line_key():
    assert {"E8", "E5-why", "E3-base-lr"} <= set(EXPERIMENT_KEYS)
    assert "E5-why" in FIGURES


def test_ring_with_band_equal_to_its_outer_clip_is_oneside():
    """ε = ε' = (0.6, 2.0): the ring's outer arms start where its band ends, so its mask is
    REC-OneSide's at (0.6, 2.0) (E8 shows the two curves as one)."""
    from simulator.losses import policy_loss

    g = torch.Generator().manual_seed(0)
    logp_old = torch.randn(64, 1, generator=g, dtype=torch.float64)
    logp = (logp_old + 2 * torch.randn(64, 1, generator=g, dtype=torch.float64)
            ).requires_grad_(True)
    adv = torch.randn(64, 1, generator=g, dtype=torch.float64)
    mask = torch.ones(64, 1, dtype=torch.bool)
    grads = []
    for name in ("rec-ring-nois", "rec-oneside-nois"):
        out = policy_loss(name, logp, logp_old, adv, mask, eps_low=0.6, eps_high=2.0)
        (grad,) = torch.autograd.grad(out.loss, logp)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    # the narrow ring is not OneSide
    outs = [policy_loss(n, logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.25)
            for n in ("rec-ring-nois", "rec-oneside-nois")]
    g0, g1 = (torch.autograd.grad(o.loss, logp)[0] for o in outs)
    assert not torch.equal(g0, g1)


def test_curves_show_the_on_policy_reference_in_stale_columns(tmp_path):
    from simulator.experiments import run_experiment
    from simulator.plots import curves_figure, plot_clipfrac

    exp = dataclasses.replace(EXPERIMENTS["E1"], arms=EXPERIMENTS["E1"].arms[:2], seeds=2,
                              steps=3, problem=dataclasses.replace(EXPERIMENTS["E1"].problem,
                                                                   prompts=2))
    report = run_experiment(exp)
    fig = curves_figure(report)
    reward_axes = fig.axes[:len(exp.settings)]
    on = exp.settings.index("on-policy")
    for j, ax in enumerate(reward_axes):
        dashdot = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
        assert len(dashdot) == (0 if j == on else 1), exp.settings[j]
    assert any("on-policy reference" in t.get_text() for t in fig.legends[0].get_texts())
    path = plot_clipfrac(report, tmp_path / "clipfrac.png")
    assert path.exists() and path.stat().st_size > 0
