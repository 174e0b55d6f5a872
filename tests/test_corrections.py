"""The corrections of simulator/corrections.py: hand-computed values of each one, its options'
errors, and how every registered correction composes with every registered loss.

The expected numbers below are worked out by hand (``math`` on the few values of each case),
never read from grlab's output. Parity with the peers' own code is in
tests/test_parity_corrections.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.corrections import (
    CORRECTIONS,
    Correction,
    CorrectionInputs,
    apply_corrections,
    binary_kl,
    proximal_logp,
)
from simulator.losses import LOSSES, group_losses, policy_loss

F64 = torch.float64


def inputs_of(logp, logp_old, logp_rollout, adv=None, mask=None, logp_ref=None, entropy=None):
    """A CorrectionInputs as policy_loss builds it: float64, masked positions 0."""
    t = lambda x: None if x is None else torch.as_tensor(x, dtype=F64)  # noqa: E731
    logp, logp_old, logp_rollout = t(logp), t(logp_old), t(logp_rollout)
    mask = torch.ones_like(logp, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    adv = torch.zeros_like(logp) if adv is None else t(adv).expand_as(logp)
    z = lambda x: None if x is None else torch.where(mask, t(x), 0.0)  # noqa: E731
    return CorrectionInputs(z(logp), z(logp_old), z(logp_rollout), z(adv), mask, z(logp_ref),
                            z(entropy))


def keep_of(name, inputs, **kw):
    stage = CORRECTIONS[name](inputs, **kw)
    return stage.keep & inputs.mask


# ------------------------------------------------------------------- rejection by a statistic

# one row, log r = log π_old − log μ = (0.1, −0.2, 0.3)
LOG_R = [0.1, -0.2, 0.3]
ROW = inputs_of([[-1.0, -1.0, -1.0]], [[-1.0 + x for x in LOG_R]], [[-1.0, -1.0, -1.0]])


def _k3(x):  # verl's k3 of log r = x: r − 1 − log r
    return math.exp(x) - 1 - x


def test_reject_k3_seq_mean_by_hand():
    mean_k3 = sum(_k3(x) for x in LOG_R) / 3  # 0.0245868...
    assert mean_k3 == pytest.approx(0.0245868, abs=1e-6)
    assert not keep_of("reject", ROW, high=0.02).any()
    assert keep_of("reject", ROW, high=0.03).all()
    assert not keep_of("k3-rs", ROW).any()  # verl's K3-RS default: 0.01


def test_reject_token_level_statistics_by_hand():
    # k1 in verl's direction: −log r = (−0.1, 0.2, −0.3); AReaL's: log r
    assert keep_of("reject", ROW, statistic="k1", aggregate="token", low=-0.15,
                   high=0.25).tolist() == [[True, True, False]]
    assert keep_of("reject", ROW, statistic="k1", aggregate="token", low=-0.15, high=0.25,
                   direction="pi-mu").tolist() == [[True, False, False]]
    # k2 = ½(log r)² = (0.005, 0.02, 0.045)
    assert keep_of("reject", ROW, statistic="k2", aggregate="token",
                   high=0.03).tolist() == [[True, True, False]]
    # k3 per token: 0.00517, 0.01873, 0.04986; AReaL's (pi-mu): 1/r − 1 + log r
    assert keep_of("reject", ROW, statistic="k3", aggregate="token",
                   high=0.0188).tolist() == [[True, True, False]]
    areal_k3 = [math.exp(-x) - 1 + x for x in LOG_R]  # 0.00484, 0.02140, 0.04082
    assert areal_k3[1] > 0.0188 > _k3(-0.2)
    assert keep_of("reject", ROW, statistic="k3", aggregate="token", high=0.0188,
                   direction="pi-mu").tolist() == [[True, False, False]]
    # the ratio itself: (1.105, 0.819, 1.350)
    assert keep_of("reject", ROW, statistic="ratio", aggregate="token", low=0.9,
                   high=1.2).tolist() == [[True, False, False]]


def test_reject_sequence_aggregates_by_hand():
    # the ratio's sum and mean are taken in log space: the product e^0.2 = 1.2214, the
    # geometric mean e^(0.2/3) = 1.0689, the largest token 1.3499, the smallest 0.8187
    for aggregate, value in (("seq_sum", math.exp(0.2)), ("seq_mean", math.exp(0.2 / 3)),
                             ("seq_max", math.exp(0.3)), ("seq_min", math.exp(-0.2))):
        assert keep_of("reject", ROW, statistic="ratio", aggregate=aggregate,
                       high=value + 1e-9).all(), aggregate
        assert not keep_of("reject", ROW, statistic="ratio", aggregate=aggregate,
                           high=value - 1e-9).any(), aggregate
    # k2 sum 0.07, max 0.045
    assert keep_of("reject", ROW, statistic="k2", aggregate="seq_sum", high=0.0701).all()
    assert not keep_of("reject", ROW, statistic="k2", aggregate="seq_sum", high=0.0699).any()
    assert keep_of("reject", ROW, statistic="k2", aggregate="seq_max", high=0.0451).all()
    assert not keep_of("reject", ROW, statistic="k2", aggregate="seq_max", high=0.0449).any()


def test_the_token_veto_rejects_a_whole_row_for_one_token():
    """token-veto: any token with π_old/μ < 1e-4 rejects its sequence (row 0: e^-10 ≈ 4.5e-5);
    a padded token never vetoes (row 1's last position)."""
    old = [[-1.0, -11.0, -1.0], [-1.0, -1.0, -30.0]]
    mu = [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    mask = torch.tensor([[True, True, True], [True, True, False]])
    inputs = inputs_of(old, old, mu, mask=mask)
    keep = keep_of("token-veto", inputs)
    assert keep.tolist() == [[False, False, False], [True, True, False]]
    assert keep_of("token-veto", inputs, low=1e-5).tolist() == [[True, True, True],
                                                                  [True, True, False]]


def test_reject_drops_from_the_denominator_by_default_and_keeps_on_request():
    """denominator="drop" (verl): a rejected token leaves the token mean's count; "keep"
    (AReaL, TRL): it stays as a zero. Two tokens, REINFORCE with A = 1 and loss −log π."""
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    mu = torch.tensor([[-1.0, -5.0]], dtype=F64)  # token 1: k3 of log r = 3 is large
    adv = torch.ones(1, dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    kwargs = {"logp_rollout": mu, "corrections": Correction("reject", {"aggregate": "token"})}
    drop = policy_loss("reinforce", logp, logp, adv, mask, **kwargs).loss
    assert float(drop) == pytest.approx(1.0, rel=1e-12)  # only token 0: −(−1)/1
    keep = policy_loss("reinforce", logp, logp, adv, mask, logp_rollout=mu,
                       corrections=Correction("reject", {"aggregate": "token",
                                                         "denominator": "keep"})).loss
    assert float(keep) == pytest.approx(0.5, rel=1e-12)  # −(−1)/2


# ------------------------------------------------------------------------------------- KPop


def test_binary_kl_by_hand():
    """p = 0.5, q = 0.25: D(p‖q) = ½ln2 + ½ln(2/3) = 0.143841; D(q‖p) = ¼ln½ + ¾ln1.5
    = 0.130812."""
    p, q = torch.tensor([math.log(0.5)], dtype=F64), torch.tensor([math.log(0.25)], dtype=F64)
    forward = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    backward = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert forward == pytest.approx(0.143841, abs=1e-6)
    assert float(binary_kl(p, q)) == pytest.approx(forward, rel=1e-12)
    assert float(binary_kl(q, p)) == pytest.approx(backward, rel=1e-12)
    inputs = inputs_of([[math.log(0.5)]], [[math.log(0.5)]], [[math.log(0.25)]])
    assert not keep_of("kpop", inputs).any()  # max 0.1438 > φ = 0.1
    assert keep_of("kpop", inputs, threshold=0.15).all()
    # both directions count: π_old = 0.25, μ = 0.5 gives D(π‖μ) = 0.1308 ≤ 0.14 but
    # D(μ‖π) = 0.1438 > 0.14
    swapped = inputs_of([[math.log(0.25)]], [[math.log(0.25)]], [[math.log(0.5)]])
    assert not keep_of("kpop", swapped, threshold=0.14).any()
    assert keep_of("kpop", swapped, threshold=0.1439).all()
    # a rare token tolerates a large ratio: p = 1e-3, q = 4e-3 (ratio 4)
    rare = inputs_of([[math.log(1e-3)]], [[math.log(1e-3)]], [[math.log(4e-3)]])
    assert keep_of("kpop", rare).all()


def test_kpop_clamps_probabilities_so_a_certain_token_stays_finite():
    inputs = inputs_of([[0.0]], [[0.0]], [[-1e-12]])  # p = 1, q ≈ 1
    stage = CORRECTIONS["kpop"](inputs)
    assert stage.keep.all() and torch.isfinite(stage.metrics["kpop_binary_kl_mean"]).all()


# ------------------------------------------------------------------------- the KL term


def _zero_adv_loss(correction, logp, **kw):
    """policy_loss of REINFORCE with A = 0: the policy term is 0, what is left is the term's
    token mean, and its gradient."""
    leaf = torch.tensor(logp, dtype=F64).requires_grad_(True)
    out = policy_loss("reinforce", leaf, leaf.detach() + kw.pop("shift", 0.0),
                      torch.zeros(leaf.shape[0], dtype=F64),
                      torch.ones(leaf.shape, dtype=torch.bool), corrections=correction, **kw)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    return float(out.loss.detach()), grad


def test_the_k3_term_and_its_gradient_by_hand():
    """β·k3 with k3 = e^{ref−logp} − (ref − logp) − 1; d/dlogp = β·(1 − e^{ref−logp})."""
    logp, ref = [[-1.0, -2.0]], [[-1.5, -1.0]]
    beta = 0.1
    k = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp[0], ref[0], strict=True)]
    value, grad = _zero_adv_loss(Correction("kl", {"beta": beta}), logp,
                                 logp_ref=torch.tensor(ref, dtype=F64))
    assert value == pytest.approx(beta * sum(k) / 2, rel=1e-12)
    expected = [beta * (1 - math.exp(r - p)) / 2 for p, r in zip(logp[0], ref[0], strict=True)]
    torch.testing.assert_close(grad, torch.tensor([expected], dtype=F64), rtol=1e-12, atol=0)


def test_the_straight_through_term_has_k3s_value_and_k2s_gradient():
    """verl's "k3+": the value of k3, the gradient of k2 = ½(logp − ref)²: β·(logp − ref)/N."""
    logp, ref = [[-1.0, -2.0]], [[-1.5, -1.0]]
    k = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp[0], ref[0], strict=True)]
    value, grad = _zero_adv_loss(Correction("kl", {"beta": 0.1, "straight_through": True}),
                                 logp, logp_ref=torch.tensor(ref, dtype=F64))
    assert value == pytest.approx(0.1 * sum(k) / 2, rel=1e-12)
    expected = [0.1 * (p - r) / 2 for p, r in zip(logp[0], ref[0], strict=True)]
    torch.testing.assert_close(grad, torch.tensor([expected], dtype=F64), rtol=1e-12, atol=0)


def test_the_is_corrected_k3_and_its_gradient_by_hand():
    """w·k3 with w = π_θ/π_old (logp − logp_old = −0.3): value β·w·k3, gradient
    β·w·(k3 + 1 − e^{ref−logp}); Trinity's cap 2 leaves w = e^{-0.3} alone, a cap below it
    freezes w (no gradient through it)."""
    logp, ref, shift = [[-1.0]], [[-1.5]], 0.3  # logp_old = logp + 0.3
    w, d = math.exp(-shift), -1.5 - (-1.0)
    k3 = math.exp(d) - d - 1
    value, grad = _zero_adv_loss(Correction("kl-corrected", {"beta": 1.0}), logp, shift=shift,
                                 logp_ref=torch.tensor(ref, dtype=F64))
    assert value == pytest.approx(w * k3, rel=1e-12)
    assert float(grad) == pytest.approx(w * (k3 + 1 - math.exp(d)), rel=1e-12)
    value, grad = _zero_adv_loss(Correction("kl-corrected-trinity", {"beta": 1.0}), logp,
                                 shift=shift, logp_ref=torch.tensor(ref, dtype=F64))
    assert value == pytest.approx(w * k3, rel=1e-12)
    value, grad = _zero_adv_loss(Correction("kl", {"beta": 1.0, "is_level": "token",
                                                   "is_cap": 0.5}), logp, shift=shift,
                                 logp_ref=torch.tensor(ref, dtype=F64))
    assert value == pytest.approx(0.5 * k3, rel=1e-12)
    assert float(grad) == pytest.approx(0.5 * (1 - math.exp(d)), rel=1e-12)


def test_the_kl_term_is_not_weighted_by_the_is_weight_nor_removed_by_a_kept_mask():
    """As in TRL (β·KL added after the vLLM ratio and the masks): an IS weight multiplies the
    policy term only; a token masked with denominator "keep" still carries its KL term."""
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=F64)
    mu = torch.tensor([[-1.0, -9.0]], dtype=F64)  # token 1: π_old/μ = e^7
    zero, mask = torch.zeros(1, dtype=F64), torch.ones(1, 2, dtype=torch.bool)
    k = sum(math.exp(r - p) - (r - p) - 1 for p, r in ((-1.0, -1.5), (-2.0, -1.0)))
    for extra in ("tis-token", "mis-token"):
        out = policy_loss("reinforce", logp, logp, zero, mask, logp_rollout=mu, logp_ref=ref,
                          corrections=[Correction("kl", {"beta": 1.0}), extra])
        assert float(out.loss) == pytest.approx(k / 2, rel=1e-12), extra


# ----------------------------------------------------------------------- entropy


def test_the_entropy_bonus_and_its_gradient_by_hand():
    entropy = torch.tensor([[0.5, 1.5, 9.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    logp = torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64)
    out = policy_loss("reinforce", logp, logp, torch.zeros(1, dtype=F64), mask,
                      entropy=entropy, corrections=Correction("entropy-bonus", {"coef": 0.1}))
    assert float(out.loss.detach()) == pytest.approx(-0.1 * (0.5 + 1.5) / 2, rel=1e-12)
    (grad,) = torch.autograd.grad(out.loss, entropy)
    torch.testing.assert_close(grad, torch.tensor([[-0.05, -0.05, 0.0]], dtype=F64))


def test_the_top_entropy_mask_by_hand():
    """Entropies 0.1, 0.5, 0.9, 1.3, 1.7 (and a padded 99): the 0.8-quantile by linear
    interpolation is 1.3 + 0.2·0.4 = 1.38 (keeps 1.7); the 0.6-quantile 0.9 + 0.4·0.4 = 1.06
    (keeps 1.3, 1.7); ρ = 1 keeps all, ρ = 0 the highest."""
    h = [[0.1, 0.5, 0.9, 1.3, 1.7, 99.0]]
    mask = torch.tensor([[True] * 5 + [False]])
    inputs = inputs_of([[-1.0] * 6], [[-1.0] * 6], [[-1.0] * 6], mask=mask, entropy=h)
    assert keep_of("top-entropy", inputs).tolist() == [[False] * 4 + [True, False]]
    assert keep_of("top-entropy", inputs, rho=0.4).tolist() == [[False] * 3 + [True] * 2
                                                                 + [False]]
    assert keep_of("top-entropy", inputs, rho=1.0).tolist() == [[True] * 5 + [False]]
    assert keep_of("top-entropy", inputs, rho=0.0).tolist() == [[False] * 4 + [True, False]]


# -------------------------------------------------------------- AReaL's proximal approximation


def test_proximal_logp_interpolates_by_version_as_areal():
    """v_θ = 5, v_prox = 4: v = 2 → α = 2/3; v = 3 → 1/2; v = 4 → 0; v = 5 → 0 (no gap);
    v = −1 (prompt) → 0."""
    mu = torch.tensor([[-2.0, -2.0, -2.0, -2.0, -2.0]], dtype=F64)
    theta = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0]], dtype=F64)
    versions = torch.tensor([[2, 3, 4, 5, -1]])
    alpha = [2 / 3, 1 / 2, 0.0, 0.0, 0.0]
    got = proximal_logp(mu, theta, versions, 5)
    torch.testing.assert_close(got, torch.tensor([[-2.0 + a for a in alpha]], dtype=F64))
    linear = proximal_logp(mu, theta, versions, 5, method="linear")
    expected = [math.log((1 - a) * math.exp(-2.0) + a * math.exp(-1.0)) for a in alpha]
    torch.testing.assert_close(linear, torch.tensor([expected], dtype=F64))
    torch.testing.assert_close(proximal_logp(mu, theta, versions, 5, method="rollout"), mu)
    assert not proximal_logp(mu, theta.requires_grad_(True), versions, 5).requires_grad


def test_proximal_logp_refuses_bad_input():
    x = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="method"):
        proximal_logp(x, x, torch.zeros(1, 2), 1, method="cubic")
    with pytest.raises(ValueError, match="one shape"):
        proximal_logp(x, x, torch.zeros(1, 3), 1)
    with pytest.raises(TypeError, match="current_version"):
        proximal_logp(x, x, torch.zeros(1, 2), 1.5)


# --------------------------------------------------------------------- bad options


@pytest.mark.parametrize(("name", "kwargs", "error", "match"), [
    ("is", {"high": 0.0}, ValueError, "high"),
    ("is", {"low": "small"}, TypeError, "low"),
    ("is", {"low": 3.0, "high": 2.0}, ValueError, "low"),
    ("is", {"level": "batch"}, ValueError, "level"),
    ("is", {"action": "clip"}, ValueError, "action"),
    ("opsm", {"ratio": "rollout"}, ValueError, "ratio"),
    ("reject", {"statistic": "k4"}, ValueError, "statistic"),
    ("reject", {"aggregate": "seq_median"}, ValueError, "aggregate"),
    ("reject", {"low": None, "high": None}, ValueError, "low, high"),
    ("reject", {"low": 0.5, "high": 0.1}, ValueError, "low"),
    ("reject", {"high": "big"}, TypeError, "high"),
    ("reject", {"statistic": "ratio", "low": -1.0, "high": 2.0}, ValueError, "ratio's bounds"),
    ("reject", {"direction": "both"}, ValueError, "direction"),
    ("reject", {"statistic": "ratio", "direction": "both"}, ValueError, "direction"),
    ("reject", {"ratio": "proximal"}, ValueError, "ratio"),
    ("reject", {"denominator": "half"}, ValueError, "denominator"),
    ("reject", {"threshold": 1.0}, TypeError, "threshold"),
    ("kpop", {"threshold": 0.0}, ValueError, "threshold"),
    ("kpop", {"eps": 0.5}, ValueError, "eps"),
    ("kl", {"beta": -0.1}, ValueError, "beta"),
    ("kl", {"estimator": "k4"}, ValueError, "estimator"),
    ("kl", {"is_level": "batch"}, ValueError, "is_level"),
    ("kl", {"is_cap": 2.0}, ValueError, "is_cap needs is_level"),
    ("kl", {"is_level": "token", "is_cap": 0.0}, ValueError, "is_cap"),
    ("kl", {"is_level": "token", "is_anchor": "ref"}, ValueError, "is_anchor"),
    ("kl", {"straight_through": "yes"}, TypeError, "straight_through"),
    ("entropy-bonus", {"coef": float("nan")}, ValueError, "coef"),
    ("top-entropy", {"rho": 1.5}, ValueError, "rho"),
    ("top-entropy", {"rho": "all"}, TypeError, "rho"),
])
def test_bad_options_name_themselves(name, kwargs, error, match):
    inputs = inputs_of([[-1.0, -2.0]], [[-1.1, -2.0]], [[-1.0, -2.5]], logp_ref=[[-1.0, -1.0]],
                       entropy=[[0.3, 0.4]])
    with pytest.raises(error, match=match):
        Correction(name, kwargs)(inputs)


@pytest.mark.parametrize(("name", "needs"), [("kl", "logp_ref"), ("kl-corrected", "logp_ref"),
                                             ("entropy-bonus", "entropy"),
                                             ("top-entropy", "entropy")])
def test_a_correction_without_its_input_says_which_input(name, needs):
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    # a preset's message names its base correction ('kl' for kl-corrected)
    with pytest.raises(ValueError, match=f"correction '{name.split('-corrected')[0]}' needs "
                       f"{needs}: pass {needs}="):
        policy_loss("ppo", logp, logp, torch.ones(1, dtype=F64),
                    torch.ones(1, 2, dtype=torch.bool), corrections=name)


# ------------------------------------------------ every correction composes with every loss

B, T = 5, 6
LOSS_NAMES = sorted(LOSSES)
CORRECTION_NAMES = sorted(CORRECTIONS)


def batch(dtype=F64, pad=0):
    """Rows 0–2: μ within 1e-5 of π_old (no statistic rejects them); rows 3–4: far off (the
    rejections act); ragged lengths, so row-level statistics see different L. ``pad`` extra
    padded columns hold junk."""
    g = torch.Generator().manual_seed(11)
    logp = -torch.rand(B, T, generator=g, dtype=F64) * 2 - 0.05
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=F64)
    noise = torch.randn(B, T, generator=g, dtype=F64)
    noise[:3] *= 1e-5
    noise[3:] *= 0.6
    mu = old + noise
    ref = logp + 0.3 * torch.randn(B, T, generator=g, dtype=F64)
    ent = torch.rand(B, T, generator=g, dtype=F64) * 3
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0, 0.7], dtype=F64)
    mask = torch.arange(T)[None] < torch.tensor([6, 4, 5, 6, 3])[:, None]
    tensors = [logp, old, mu, ref, ent]
    if pad:
        junk = torch.full((B, pad), 7.5, dtype=F64)
        tensors = [torch.cat([x, junk], dim=1) for x in tensors]
        mask = torch.cat([mask, torch.zeros(B, pad, dtype=torch.bool)], dim=1)
    tensors = [x.to(dtype) for x in tensors]
    return (*tensors, adv.to(dtype), mask)


def _length(name, t):
    return {"norm_len": float(t)} if LOSSES[name].agg == "seq-mean-token-sum-norm" else {}


def run(name, correction, tensors, *, width=T):
    logp, old, mu, ref, ent, adv, mask = tensors
    leaf = logp.clone().requires_grad_(True)
    ent_leaf = ent.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, logp_rollout=mu, logp_ref=ref,
                      entropy=ent_leaf, corrections=correction, **_length(name, width))
    grads = torch.autograd.grad(out.loss, [leaf, ent_leaf], allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, (leaf, ent_leaf),
                                                                      strict=True)]
    return out, grads


@pytest.mark.parametrize("correction", CORRECTION_NAMES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_correction_composes_with_every_loss(name, correction):
    """A scalar loss, finite value and gradients, scalar metrics; float32 gives float64's
    numbers on the same (rounded) inputs; junk in padded positions and extra padded columns
    change nothing, and padded positions get no gradient."""
    out, grads = run(name, correction, batch())
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(v.shape == () and bool(torch.isfinite(v)) for v in out.metrics.values())
    mask = batch()[-1]
    assert not bool(grads[0][~mask].any()) and not bool(grads[1][~mask].any())

    single = batch(torch.float32)
    out32, grads32 = run(name, correction, single)
    assert out32.loss.dtype == torch.float32 and torch.isfinite(out32.loss)
    out64, grads64 = run(name, correction, [x.to(F64) if x.is_floating_point() else x
                                            for x in single])
    torch.testing.assert_close(out32.loss.double(), out64.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grads32[0].double(), grads64[0], rtol=1e-5, atol=1e-7)

    junk = list(batch())
    for i in range(5):
        junk[i] = junk[i].masked_fill(~junk[-1], float("nan") if i % 2 else -1e30)
    out_junk, grads_junk = run(name, correction, junk)
    assert float(out_junk.loss.detach()) == float(out.loss.detach())
    torch.testing.assert_close(grads_junk[0][mask], grads[0][mask], rtol=0, atol=0)

    padded, padded_grads = run(name, correction, batch(pad=3), width=T)
    torch.testing.assert_close(padded.loss, out.loss, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(padded_grads[0][:, :T], grads[0], rtol=1e-14, atol=1e-15)
    assert not bool(padded_grads[0][:, T:].any())


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_correction_gives_exactly_the_one_policy_numbers(name):
    """corrections=None or () and the extra tensors change nothing: identical bits."""
    logp, old, mu, ref, ent, adv, mask = batch()
    plain = policy_loss(name, logp, old, adv, mask, **_length(name, T))
    for extra in ({"corrections": None}, {"corrections": ()},
                  {"logp_ref": ref, "entropy": ent}, {"logp_rollout": mu}):
        if "logp_rollout" in extra and (LOSSES[name].inputs or LOSSES[name].corrections):
            continue  # a loss that reads μ itself, or binds a correction, changes with it
        other = policy_loss(name, logp, old, adv, mask, **extra, **_length(name, T))
        assert torch.equal(other.loss, plain.loss), extra
        assert other.metrics.keys() == plain.metrics.keys()


@pytest.mark.parametrize("correction", [c for c in CORRECTION_NAMES
                                        if c not in ("kl", "kl-corrected", "kl-corrected-trinity",
                                                     "entropy-bonus", "top-entropy")])
def test_group_losses_apply_the_log_prob_corrections_group_by_group(correction):
    """group_losses with a correction gives each group what policy_loss gives it alone, for
    corrections that are per row or per token (not batch-normalised)."""
    logp, old, mu, _, _, adv, mask = batch()
    g = [x[:4].reshape(2, 2, T) for x in (logp, old, mu, adv.unsqueeze(-1).expand(B, T), mask)]
    out = group_losses("ppo", g[0], g[1], g[3], g[4], logp_rollout=g[2], corrections=correction)
    for i in range(2):
        if not bool(apply_corrections([Correction(correction)], inputs_of(
                g[0][i], g[1][i], g[2][i], g[3][i], g[4][i])).loss_mask.any()):
            continue
        alone = policy_loss("ppo", g[0][i], g[1][i], g[3][i], g[4][i], logp_rollout=g[2][i],
                            corrections=correction)
        assert float(out.loss[i]) == pytest.approx(float(alone.loss), rel=1e-12, abs=1e-15)


def test_every_correction_names_its_source_and_states_its_formula():
    for name, spec in CORRECTIONS.items():
        assert spec.follows, name
        assert spec.summary, name
        assert (spec.fn.__doc__ or "").strip(), name


def test_the_command_line_form_reads_none_and_numbers():
    """``name:key=value,...``: verl's token_k1 "0.5_1.25" read as grlab keywords."""
    correction = Correction.parse("reject:statistic=k1,aggregate=token,low=-0.2231435513142097,"
                                  "high=0.6931471805599453,denominator=keep")
    assert correction.hparams == {"statistic": "k1", "aggregate": "token",
                                  "low": math.log(0.8), "high": math.log(2.0),
                                  "denominator": "keep"}
    assert Correction.parse("vllm-is-token-mask:low=0.5,high=none").hparams == {"low": 0.5,
                                                                                "high": None}
    with pytest.raises(TypeError, match="keyword for correction 'kpop'"):
        Correction.parse("kpop:phi=0.1")


def test_the_is_corrected_k3_gradient_is_the_exact_reverse_kl_gradient():
    """DeepSeek-V3.2's reason for the correction, checked exactly on a 4-token categorical:
    E_{y∼π_old}[∇(π_θ(y)/π_old(y))·k3(y)] = ∇KL(π_θ‖π_ref) for any π_old, while the plain
    k3 term's expected gradient under π_old ≠ π_θ is not. Every y is one row; the expectation is
    the token-weighted sum (token_weights = 4·π_old(y) against the token mean's 1/4)."""
    theta = torch.tensor([0.3, -0.5, 1.2, 0.0], dtype=F64, requires_grad=True)
    old = torch.log_softmax(torch.tensor([1.0, 0.2, -0.4, 0.1], dtype=F64), -1)
    ref = torch.log_softmax(torch.tensor([-0.2, 0.7, 0.3, -1.0], dtype=F64), -1)
    logp = torch.log_softmax(theta, -1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    weights = (4 * old.exp()).unsqueeze(-1)

    def expected_grad(correction):
        loss = policy_loss("reinforce", logp.unsqueeze(-1), old.unsqueeze(-1),
                           torch.zeros(4, dtype=F64), mask, token_weights=weights,
                           logp_ref=ref.unsqueeze(-1),
                           corrections=Correction(correction, {"beta": 1.0})).loss
        return torch.autograd.grad(loss, theta, retain_graph=True)[0]

    exact = torch.autograd.grad((logp.exp() * (logp - ref)).sum(), theta, retain_graph=True)[0]
    torch.testing.assert_close(expected_grad("kl-corrected"), exact, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(expected_grad("kl"), exact, rtol=1e-3)


@pytest.mark.parametrize("correction", CORRECTION_NAMES)
def test_every_correction_traces_under_torch_func(correction):
    """With validate=False, a loss with any correction is a pure tensor function, as a loss
    alone is: torch.func.grad equals autograd, and vmap over a stack of batches equals the
    calls one by one (the exact engines vmap corrections over groups)."""
    logp, old, mu, ref, ent, adv, mask = batch()

    def f(x):
        return policy_loss("grpo", x, old, adv, mask, logp_rollout=mu, logp_ref=ref,
                           entropy=ent, corrections=correction, validate=False).loss

    x = logp.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(torch.func.grad(f)(logp), expected, rtol=0, atol=0)
    batched = torch.func.vmap(f)(torch.stack([logp, logp - 0.1]))
    torch.testing.assert_close(batched, torch.stack([f(logp), f(logp - 0.1)]), rtol=0, atol=0)


@pytest.mark.parametrize("correction", CORRECTION_NAMES)
def test_a_correction_declares_exactly_the_optional_inputs_it_reads(correction):
    """``CorrectionSpec.inputs`` (what the trainer checks before any work) names exactly the
    optional tensors without which the correction refuses to run."""
    logp, old, mu, ref, ent, adv, mask = batch()
    needs = set()
    for name in ("logp_ref", "entropy"):
        given = {"logp_ref": ref, "entropy": ent, name: None}
        try:
            Correction(correction)(inputs_of(logp, old, mu, adv.unsqueeze(-1), mask, **given))
        except ValueError as error:
            assert f"needs {name}" in str(error), error
            needs.add(name)
    assert set(CORRECTIONS[correction].inputs) == needs
