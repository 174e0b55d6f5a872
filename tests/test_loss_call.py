"""Contract tests over the whole loss registry: shapes, masking, extremes, dtypes, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from simulator.losses import LOSSES, LossOutput, policy_loss, register_loss
from tests.loss_inputs import extra_inputs
from theory_tests.strategies import loss_cases

ALL = sorted(LOSSES)
CONTRACT_NAMES = [
    "reinforce", "rec", "ppo", "gspo", "gspo-token", "cispo", "opmd-kimi", "opmd-trinity",
    "asymre", "topr", "sppo", "grpo", "rec-oneside-nois", "rec-oneside-is", "rec-twoside-nois",
    "rec-twoside-is", "rec-ring-nois", "rec-ring-is", "red-weight", "dapo", "dr-grpo",
]


def length_for(name, agg=None, t=4):
    """``norm_len`` when the mode divides by a stated constant length, else nothing."""
    mode = LOSSES[name].agg if agg is None else agg
    return {"norm_len": float(t)} if mode == "seq-mean-token-sum-norm" else {}


def tiny(dtype=torch.float64, b=3, t=4):
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(b, t, generator=g, dtype=torch.float64) - 0.1).to(dtype)
    logp_old = (logp.double() + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64))
    adv = torch.randn(b, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 2:] = False
    return logp, logp_old.to(dtype), adv, mask


def test_every_name_of_the_public_contract_is_registered():
    assert set(CONTRACT_NAMES) <= set(LOSSES)


@pytest.mark.parametrize("name", ALL)
def test_output_is_a_scalar_loss_and_detached_scalar_metrics(name):
    logp, logp_old, adv, mask = tiny()
    logp.requires_grad_(True)
    out = policy_loss(name, logp, logp_old, adv, mask, **length_for(name),
                      **extra_inputs(name, logp_old))
    assert isinstance(out, LossOutput)
    assert out.loss.shape == () and out.loss.requires_grad
    assert {"clipfrac", "approx_kl", "ratio_mean"} <= set(out.metrics)
    for key, value in out.metrics.items():
        assert value.shape == () and not value.requires_grad, key
        assert torch.isfinite(value), key
    assert 0.0 <= float(out.metrics["clipfrac"]) <= 1.0


def test_metrics_mean_what_they_say():
    """approx_kl = masked mean of log π_old − log π; ratio_mean = masked mean of ρ."""
    logp = torch.tensor([[-1.0, -2.0, -9.0]], dtype=torch.float64)
    logp_old = torch.tensor([[-1.5, -1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    out = policy_loss("reinforce", logp, logp_old, torch.ones(1, dtype=torch.float64), mask)
    assert float(out.metrics["approx_kl"]) == pytest.approx((-0.5 + 1.0) / 2, rel=1e-12)
    expected_ratio = (torch.exp(torch.tensor(0.5)) + torch.exp(torch.tensor(-1.0))) / 2
    assert float(out.metrics["ratio_mean"]) == pytest.approx(float(expected_ratio), rel=1e-6)


@pytest.mark.parametrize("name", ALL)
@given(case=loss_cases(max_log_ratio=1.5), junk=st.sampled_from([0.0, 7.5, -1e30, float("nan"),
                                                                 float("inf")]))
def test_a_masked_token_changes_nothing(name, case, junk):
    """Whatever a padded position holds — even NaN or inf — the loss, its gradient at valid
    positions and the metrics are unchanged, and its own gradient is exactly 0."""
    if bool(case.mask.all()):
        case.mask[0, -1] = case.mask.shape[1] == 1  # make sure something is masked if possible
    outs = []
    for fill in (None, junk):
        logp, logp_old, adv = case.logp.clone(), case.logp_old.clone(), case.adv.clone()
        if fill is not None:
            logp[~case.mask] = fill
            logp_old[~case.mask] = fill
            if adv.ndim == 2:
                adv[~case.mask] = fill
        logp.requires_grad_(True)
        out = policy_loss(name, logp, logp_old, adv, case.mask,
                          **length_for(name, t=case.mask.shape[1]),
                          **extra_inputs(name, case.logp_old))
        (grad,) = torch.autograd.grad(out.loss, logp)
        outs.append((out, grad))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)
    assert (gb[~case.mask] == 0).all()
    for key in a.metrics:
        torch.testing.assert_close(a.metrics[key], b.metrics[key], rtol=0, atol=0)


def test_low_precision_inputs_are_computed_in_float64_and_returned_in_float32():
    """The math runs in float64 (simulator.numerics); bf16 gets a float32 value and metrics,
    and its gradient comes back in bf16."""
    logp, logp_old, adv, mask = tiny(torch.bfloat16)
    logp.requires_grad_(True)
    out = policy_loss("grpo", logp, logp_old, adv, mask)
    assert out.loss.dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in out.metrics.values())
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert grad.dtype == torch.bfloat16
    reference = policy_loss("grpo", logp.detach().double(), logp_old.double(), adv.double(), mask)
    assert float(out.loss.detach()) == pytest.approx(float(reference.loss), rel=1e-6)


def test_logp_old_and_advantages_are_constants():
    """The docs say logp_old and the advantages are constants: even when the caller's tensors
    require grad, they receive none."""
    logp, logp_old, adv, mask = tiny()
    logp.requires_grad_(True)
    logp_old.requires_grad_(True)
    adv.requires_grad_(True)
    for name in ("ppo", "rec-oneside-is", "opmd-kimi", "sppo", "red-weight", "gspo"):
        out = policy_loss(name, logp, logp_old, adv, mask)
        grads = torch.autograd.grad(out.loss, (logp, logp_old, adv), allow_unused=True)
        assert grads[1] is None and grads[2] is None, name


def test_default_aggregation_comes_from_the_preset_and_an_explicit_one_wins():
    logp, logp_old, adv, mask = tiny()
    for name in ("gspo", "dr-grpo", "grpo"):
        default = policy_loss(name, logp, logp_old, adv, mask, **length_for(name)).loss
        explicit = policy_loss(name, logp, logp_old, adv, mask, agg=LOSSES[name].agg,
                               **length_for(name)).loss
        assert torch.equal(default, explicit)
    a = policy_loss("gspo", logp, logp_old, adv, mask, agg="token-mean").loss
    b = policy_loss("gspo", logp, logp_old, adv, mask).loss
    assert not torch.equal(a, b)  # rows have different lengths, so the modes differ


def test_presets_carry_their_advantage_kind():
    expected = {"grpo": "mean-std", "dapo": "mean-std", "dr-grpo": "mean", "rloo": "loo",
                "rec-oneside-nois": "mean", "rec-ring-is": "mean", "red-weight": "mean",
                "red-drop": "red-drop", "reinforce": "mean", "gspo": "mean-std",
                "bnpo": "mean-std", "topr": "none"}
    for name, kind in expected.items():
        assert LOSSES[name].advantage == kind, name
    assert LOSSES["dapo"].drop_uniform_groups
    assert LOSSES["dapo"].defaults()["eps_high"] == 0.28
    assert LOSSES["grpo"].defaults()["dual_clip"] is None
    assert LOSSES["rec-ring-nois"].defaults()["clip"] == "ring"


def test_preset_advantages_follow_the_kind():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    adv, keep = LOSSES["grpo"].advantages(rewards)
    torch.testing.assert_close(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64) /
                               (0.5 + 1e-6))
    assert keep.all()
    adv, keep = LOSSES["dapo"].advantages(rewards)
    assert keep[0].all() and not keep[1].any()  # the uniform group is dropped
    with pytest.raises(ValueError, match="generator"):
        LOSSES["red-drop"].advantages(rewards)


def test_policy_loss_traces_under_torch_func():
    """With validate=False the loss is a pure tensor function: torch.func.grad and vmap work
    and agree with autograd."""
    logp, logp_old, adv, mask = tiny()

    def f(x):
        return policy_loss("rec-ring-is", x, logp_old, adv, mask, validate=False).loss

    grad_func = torch.func.grad(f)(logp)
    x = logp.clone().requires_grad_(True)
    (grad_autograd,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(grad_func, grad_autograd, rtol=0, atol=0)
    batched = torch.func.vmap(f)(torch.stack([logp, logp - 0.1]))
    torch.testing.assert_close(batched[0], f(logp), rtol=0, atol=0)


# ----------------------------------------------------------------------------- bad input


def test_unknown_loss_name_lists_the_valid_ones():
    logp, logp_old, adv, mask = tiny()
    with pytest.raises(KeyError, match="did you mean 'grpo'") as info:
        policy_loss("grpoo", logp, logp_old, adv, mask)
    assert "rec-oneside-nois" in str(info.value)


def test_a_typo_in_a_keyword_raises_instead_of_being_ignored():
    logp, logp_old, adv, mask = tiny()
    with pytest.raises(TypeError, match=r"eps_hgih.*did you mean 'eps_high'"):
        policy_loss("rec", logp, logp_old, adv, mask, eps_hgih=0.3)
    with pytest.raises(TypeError, match="beta"):
        policy_loss("reinforce", logp, logp_old, adv, mask, beta=0.1)


@pytest.mark.parametrize(("name", "kwargs", "argument"), [
    ("rec", {"eps_low": -0.1}, "eps_low"),
    ("ppo", {"eps_high": -1.0}, "eps_high"),
    ("ppo", {"dual_clip": 0.5}, "dual_clip"),
    ("ppo", {"dual_clip": 1.0}, "dual_clip"),
    ("ppo", {"log_ratio_clamp": 0.0}, "log_ratio_clamp"),
    ("cispo", {"mask_clip": True, "mask_eps_low": -0.5}, "mask_eps_low"),
    ("sppo-trinity", {"eps": 0.0}, "eps"),
    ("topr", {"threshold": float("nan")}, "threshold"),
    ("opmd-kimi", {"tau": 0.0}, "tau"),
    ("opmd-trinity", {"tau": -1.0}, "tau"),
    ("rec", {"temp": 0.0}, "temp"),
    ("rec", {"clip": "both"}, "clip"),
    ("rec", {"weight": "ratio"}, "weight"),
    ("rec", {"regularizer": "kl"}, "regularizer"),
    ("rec", {"clip": "ring", "eps_low_prime": 0.1}, "eps_low_prime"),
    ("opmd-kimi", {"level": "batch"}, "level"),
    ("sppo", {"eta": 0.0}, "eta"),
    ("asymre", {"beta": float("nan")}, "beta"),
    ("cispo", {"eps_high": float("inf")}, "eps_high"),
])
def test_bad_hyperparameters_raise_value_errors_naming_them(name, kwargs, argument):
    logp, logp_old, adv, mask = tiny()
    with pytest.raises(ValueError, match=argument):
        policy_loss(name, logp, logp_old, adv, mask, **kwargs)


def test_a_hyperparameter_of_the_wrong_type_is_a_type_error():
    logp, logp_old, adv, mask = tiny()
    with pytest.raises(TypeError, match="eps_low"):
        policy_loss("rec", logp, logp_old, adv, mask, eps_low="0.2")


def _bad_inputs():
    logp, logp_old, adv, mask = tiny()
    nan_logp = logp.clone()
    nan_logp[1, 1] = float("nan")
    inf_old = logp_old.clone()
    inf_old[2, 0] = float("-inf")
    nan_adv = adv.clone()
    nan_adv[0] = float("nan")
    two_mask = mask.to(torch.int64)
    two_mask[0, 0] = 2
    return [
        ((logp[0], logp_old[0], adv, mask[0]), ValueError, "logp must be a \\[B, T\\]"),
        ((logp, logp_old[:, :2], adv, mask), ValueError, "logp_old must have the shape"),
        ((logp, logp_old, adv[:2], mask), ValueError, "advantages must have shape"),
        ((logp, logp_old, adv, mask[:, :2]), ValueError, "mask must have shape"),
        ((logp, logp_old.float(), adv, mask), ValueError, "dtypes must match"),
        ((logp, logp_old.to("meta"), adv, mask), ValueError, "one device"),
        ((nan_logp, logp_old, adv, mask), ValueError, "logp contains 1 NaN"),
        ((logp, inf_old, adv, mask), ValueError, "logp_old contains"),
        ((logp, logp_old, nan_adv, mask), ValueError, "advantages contains"),
        ((logp, logp_old, adv, torch.zeros_like(mask)), ValueError, "no valid token"),
        ((logp, logp_old, adv, two_mask), ValueError, "mask must be bool or hold only 0 and 1"),
        ((logp.long(), logp_old, adv, mask), TypeError, "logp must have a floating-point"),
        ((logp.tolist(), logp_old, adv, mask), TypeError, "logp must be a torch.Tensor"),
        ((logp, logp_old, adv, mask.tolist()), TypeError, "mask must be a torch.Tensor"),
    ]


@pytest.mark.parametrize(("args", "error", "message"), _bad_inputs())
def test_bad_inputs_raise_clear_errors(args, error, message):
    with pytest.raises(error, match=message):
        policy_loss("grpo", *args)


def test_a_zero_one_float_mask_is_accepted_and_equals_the_bool_mask():
    logp, logp_old, adv, mask = tiny()
    a = policy_loss("grpo", logp, logp_old, adv, mask).loss
    b = policy_loss("grpo", logp, logp_old, adv, mask.double()).loss
    assert torch.equal(a, b)


def test_bad_aggregation_arguments():
    logp, logp_old, adv, mask = tiny()
    with pytest.raises(ValueError, match="agg must be one of"):
        policy_loss("grpo", logp, logp_old, adv, mask, agg="sum")
    with pytest.raises(ValueError, match="norm_len only applies"):
        policy_loss("grpo", logp, logp_old, adv, mask, norm_len=10)
    with pytest.raises(ValueError, match="norm_len must be > 0"):
        policy_loss("dr-grpo", logp, logp_old, adv, mask, norm_len=0)
    with pytest.raises(ValueError, match="pass norm_len="):
        policy_loss("grpo", logp, logp_old, adv, mask, agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="rows must be one of"):
        policy_loss("grpo", logp, logp_old, adv, mask, rows="some")
    with pytest.raises(ValueError, match="denominator must be > 0"):
        policy_loss("grpo", logp, logp_old, adv, mask, denominator=0.0)


def test_the_registry_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("grpo")(lambda logp, logp_old, adv, mask: None)


def test_token_weights_multiply_each_tokens_loss_before_the_normaliser():
    """ℓ_t·w_t, then the same aggregation and count: REINFORCE with random weights w gives
    −Σ A·w·log π / N over the valid tokens, computed here from the batch."""
    logp, logp_old, adv, mask = tiny()
    weights = torch.rand(logp.shape, generator=torch.Generator().manual_seed(3),
                         dtype=torch.float64)
    out = policy_loss("reinforce", logp, logp_old, adv, mask, token_weights=weights)
    expected = -(adv[:, None] * weights * logp)[mask].sum() / mask.sum()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-12)
    same = policy_loss("reinforce", logp, logp_old, adv, mask,
                       token_weights=torch.ones_like(weights))
    assert torch.equal(same.loss, policy_loss("reinforce", logp, logp_old, adv, mask).loss)
    with pytest.raises(ValueError, match="token_weights must be >= 0"):
        policy_loss("reinforce", logp, logp_old, adv, mask, token_weights=-weights)
    with pytest.raises(ValueError, match="token_weights must have the shape"):
        policy_loss("reinforce", logp, logp_old, adv, mask, token_weights=weights[:, :1])


@pytest.mark.parametrize("keyword", ["agg", "norm_len", "rows", "denominator", "token_weights",
                                     "validate", "method", "advantage", "advantage_kwargs",
                                     "anchor"])
def test_a_loss_keyword_named_like_a_call_option_is_refused_at_registration(keyword):
    """A keyword sharing a name with policy_loss's or the exact engines' own options (or a
    LossSetup field) could never be passed to the loss: registration refuses it."""
    namespace: dict = {}
    exec(f"def fn(logp, logp_old, adv, mask, *, {keyword}=1.0):\n    return None", namespace)
    with pytest.raises(ValueError, match=rf"loss 'clash-test' has keyword\(s\) \['{keyword}'\]"):
        register_loss("clash-test")(namespace["fn"])
    assert "clash-test" not in LOSSES


def test_loss_setup_sorts_keywords_once_and_feeds_policy_loss():
    """from_keywords: setup fields by name, the rest loss keywords; policy_loss given the
    LossSetup equals the same call by name and keywords, and an explicit option still wins."""
    from simulator.losses import LossSetup

    setup = LossSetup.from_keywords("dr-grpo", eps_high=0.3, advantage="loo", norm_len=6.0)
    assert (setup.loss, dict(setup.hparams), setup.advantage, setup.norm_len) == (
        "dr-grpo", {"eps_high": 0.3}, "loo", 6.0)
    logp, logp_old, adv, mask = tiny()
    by_name = policy_loss("dr-grpo", logp, logp_old, adv, mask, norm_len=6.0, eps_high=0.3)
    by_setup = policy_loss(setup, logp, logp_old, adv, mask)
    assert torch.equal(by_name.loss, by_setup.loss)
    other = policy_loss(setup, logp, logp_old, adv, mask, norm_len=2.0, eps_high=0.1)
    assert torch.equal(other.loss, policy_loss("dr-grpo", logp, logp_old, adv, mask,
                                               norm_len=2.0, eps_high=0.1).loss)
    assert not torch.equal(other.loss, by_setup.loss)
    with pytest.raises(TypeError, match="keyword for loss 'dr-grpo'"):
        LossSetup.from_keywords("dr-grpo", eps_hihg=0.3)


def test_loss_setup_carries_which_rows_a_sequence_mode_counts():
    """rows="valid" divides a per-sequence mode by the rows that have a valid token (verl's
    single-process agg_loss): with one fully masked row of B, the seq-mean loss is B/(B − 1) of
    rows="all"'s. A LossSetup carries it to policy_loss and group_losses, an explicit rows
    wins, and a value other than "all"/"valid" is refused naming rows."""
    from simulator.losses import LossSetup, group_losses

    logp, logp_old, adv, mask = tiny()
    mask = mask.clone()
    mask[-1] = False
    rows = mask.shape[0]
    every = policy_loss("grpo", logp, logp_old, adv, mask, rows="all").loss
    valid = policy_loss("grpo", logp, logp_old, adv, mask, rows="valid").loss
    assert torch.allclose(valid, every * rows / (rows - 1), rtol=1e-6)
    setup = LossSetup.from_keywords("grpo", rows="valid")
    assert setup.rows == "valid" and dict(setup.hparams) == {}
    assert torch.equal(policy_loss(setup, logp, logp_old, adv, mask).loss, valid)
    assert torch.equal(policy_loss(setup, logp, logp_old, adv, mask, rows="all").loss, every)
    grouped = group_losses(setup, logp[None], logp_old[None], adv[None], mask[None]).loss
    assert torch.allclose(grouped, valid.double(), rtol=1e-6)
    with pytest.raises(ValueError, match="rows must be one of"):
        LossSetup("grpo", rows="some")


def test_the_norm_len_rule():
    """Under seq-mean-token-sum-norm: the caller's norm_len, else the maximum completion
    length; under any other mode the caller's value passes through (policy_loss refuses it)."""
    from simulator.aggregation import norm_len_for
    from simulator.losses import LossSetup

    assert norm_len_for("seq-mean-token-sum-norm", 12) == 12.0
    assert norm_len_for("seq-mean-token-sum-norm", 12, 5.0) == 5.0
    assert norm_len_for("token-mean", 12) is None
    assert norm_len_for("token-mean", 12, 5.0) == 5.0
    assert LossSetup("dr-grpo").length_for(16) == 16.0
    assert LossSetup("dr-grpo", agg="token-mean").length_for(16) is None
    assert LossSetup("grpo", agg="seq-mean-token-sum-norm", norm_len=3.0).length_for(16) == 3.0


def test_the_call_layer_needs_no_zoo_at_import_and_the_public_face_has_it_all():
    """simulator.loss_call imports without the zoo (imports point one way: the zoo imports the
    call layer); imported first, the public face simulator.losses still fills LOSSES and
    exports the call layer's names and LossSetup."""
    import subprocess
    import sys

    code = ("import sys, simulator.loss_call as c; zoo = 'simulator.losses' in sys.modules; "
            "import simulator.losses as z; "
            "print(zoo, len(z.LOSSES), z.policy_loss is c.policy_loss, "
            "z.group_losses is c.group_losses, z.LossSetup is c.LossSetup)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", str(len(LOSSES)), "True", "True", "True"]
