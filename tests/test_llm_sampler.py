"""The trainer's third policy: a mismatched sampler (its own temperature, top-k, top-p, bf16
weights) whose log-probs μ are recorded at sampling time, apart from the trainer's recomputed
π_old, and ``--correction`` on π_old/μ."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import torch

import llm_bridge.trainer as trainer_module
from llm_bridge import cli
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.rollout import sampling_logprobs
from llm_bridge.tasks import TreeTask
from llm_bridge.trainer import TrainConfig, make_batch, recompute_old, train

TASK = TreeTask.random(seed=0)
STEP = {"loss": "grpo", "steps": 2, "max_new_tokens": TASK.max_new_tokens, "group_size": 4,
        "prompts_per_step": 2, "lr": 3e-3, "eval_every": 100, "eval_prompts": 2,
        "checkpoint_every": 100, "plot": False}


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _run(tok, **overrides):
    task = TASK
    model = tiny_model(tok, seed=0)
    return train(TrainConfig(**{**STEP, **overrides}), model, tok, task)


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_top_k_keeps_the_k_most_likely_tokens_renormalised():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    logp = sampling_logprobs(logits, 0.8, top_k=2)
    expected = torch.log_softmax(logits[:, :2] / 0.8, dim=-1)
    assert torch.allclose(logp[:, :2], expected) and torch.isinf(logp[:, 2:]).all()
    both = sampling_logprobs(logits, 1.0, top_p=0.5, top_k=3)  # top-k first, then top-p
    assert torch.isfinite(both).sum() == 1


def test_a_matched_sampler_calls_the_loss_with_one_policy_as_before(tok, monkeypatch):
    """No sampler option and no correction: nothing is recomputed, and the loss gets the
    sampler's log-probs as logp_old, no logp_rollout, no correction — the call of the trainer
    before the third policy (its numbers were checked equal to that trainer's by hand)."""
    calls = []
    real = trainer_module.policy_loss

    def spy(setup, logp, logp_old, adv, mask, **kwargs):
        calls.append((setup, kwargs))
        return real(setup, logp, logp_old, adv, mask, **kwargs)

    monkeypatch.setattr(trainer_module, "policy_loss", spy)
    run = _run(tok, sampler_temperature=1.0)  # the trainer's own temperature: matched
    assert calls and all(kw["logp_rollout"] is None and kw["logp_ref"] is None
                         and setup.corrections == () for setup, kw in calls)
    assert not {"kl_sampler", "is_weight_mean", "rejected_frac"} & set(run.history[1])
    assert _strip(run.history) == _strip(_run(tok).history)


def test_a_mismatched_sampler_with_corrections_shows_the_mismatch(tok):
    """Sampling at 0.5 while training at 1.0: μ ≠ π_old. π_old is recomputed on the weights
    that sampled, so on-policy the loss's ratio is exactly 1 (approx_kl 0) while the sampler's
    KL to π_old is not; TIS weights differ from 1 and MIS at 1.01 rejects tokens
    (on the first step: after it the model is sure of its few actions)."""
    run = _run(tok, sampler_temperature=0.5,
               correction=("tis-token", "mis-token:high=1.01"))
    rows = run.history[1:]
    assert len(rows) == 2
    for row in rows:
        assert abs(row["approx_kl"]) < 1e-6 and row["clipfrac"] == 0.0
        assert row["kl_sampler"] > 1e-3
        assert row["is_weight_mean"] != pytest.approx(1.0, abs=1e-3)
        assert "is_ratio_mean" in row
    assert max(row["rejected_frac"] for row in rows) > 0


@pytest.mark.parametrize("sampler", [{"sampler_dtype": "bf16"}, {"top_k": 2},
                                     {"top_p": 0.5}])
def test_each_sampler_option_makes_mu_differ_from_the_recomputed_pi_old(tok, sampler):
    """μ (recorded while sampling) is the distribution sampled from; π_old is the trainer's
    pass on the same weights: they differ under bf16 weights, top-k and top-p."""
    task = TASK
    model = tiny_model(tok, seed=0)
    cfg = TrainConfig(**{**STEP, **sampler})
    batch = make_batch(model, tok, task, cfg, data_generator=torch.Generator().manual_seed(0),
                       sample_generator=torch.Generator().manual_seed(1))
    r = batch.rollout
    assert r.logp_old is not None
    again = recompute_old(model, r, TrainConfig(**STEP), task.allowed_tokens(tok))
    assert torch.equal(r.logp_old, again)
    gap = (r.logp_behavior - r.logp_old)[r.response_mask]
    assert gap.abs().max() > 1e-4  # bf16 weights: about 1e-3 here; fp32 round-off: 1e-6
    if "sampler_dtype" not in sampler:  # truncation only raises the kept tokens' probability
        assert (gap > -1e-5).all()


def test_no_recompute_old_uses_mu_as_pi_old(tok):
    """--no-recompute-old (verl's bypass mode): the loss's π_old is μ, so the truncation
    shows in the loss's ratio (approx_kl) and there is no kl_sampler."""
    run = _run(tok, top_p=0.5, recompute_old=False)
    assert "kl_sampler" not in run.history[1]
    assert run.history[1]["approx_kl"] > 1e-3  # log μ − log π_θ: the log of 1/(kept mass)


def test_resume_with_a_mismatched_sampler_and_refusal_of_other_corrections(tok, tmp_path):
    """Stale batches wait with their π_old in the checkpoint: a resumed run ends with the
    parameters of an uninterrupted one; the same correction written otherwise (its bound
    value given) resumes; another --correction is refused, naming it."""
    options = {**STEP, "steps": 5, "sync_interval": 3, "sync_offset": 1,
               "sampler_temperature": 0.8, "correction": ("icepop",)}
    task = TASK
    straight = train(TrainConfig(**options, out=tmp_path / "a"), tiny_model(tok, seed=0), tok,
                     task)
    train(TrainConfig(**options, out=tmp_path / "b"), tiny_model(tok, seed=0), tok, task,
          stop_after=3)
    resumed = train(TrainConfig(**options, out=tmp_path / "b", resume=True),
                    tiny_model(tok, seed=0), tok, task)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert _strip(straight.history) == _strip(resumed.history)
    # the same correction written with its bound value is the same run, not another
    again = train(TrainConfig(**{**options, "correction": ("icepop:high=5",), "steps": 6},
                              out=tmp_path / "b", resume=True), tiny_model(tok, seed=0), tok, task)
    assert len(again.history) > len(resumed.history)
    other = {**options, "correction": ("icepop:high=4",)}
    with pytest.raises(ValueError, match="correction: \\['icepop'\\] there"):
        train(TrainConfig(**other, out=tmp_path / "b", resume=True), tiny_model(tok, seed=0),
              tok, task)


@pytest.mark.parametrize(("correction", "error", "match"), [
    ("tis-tokn", KeyError, "did you mean 'tis-token'"),
    ("is:levl=token", TypeError, "'level'"),
    ("is:level=bogus", ValueError, "level must be one of"),
    ("is:normalize=true", ValueError, "micro-batch"),
    ("is:high", ValueError, "NAME:key=value"),
])
def test_a_bad_correction_is_refused_before_any_work(correction, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(correction=(correction,))


def test_the_command_takes_repeated_corrections_and_names_the_flag(grlab, tmp_path):
    code, out = grlab("train-llm", "--model", "tiny", "--task", "tree", "--steps", "1",
                      "--eval-every", "100", "--eval-prompts", "2", "--device", "cpu",
                      "--sampler-temperature", "0.7", "--correction", "tis-token",
                      "--correction", "mis-token:high=1.05", "--out", str(tmp_path / "run"))
    assert code == 0, out
    assert " w " in out and " rej " in out and "kl_samp" in out
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["config"]["correction"] == ["tis-token", "mis-token:high=1.05"]
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[1])
    assert row["rejected_frac"] > 0
    code, out = grlab("train-llm", "--model", "tiny", "--steps", "1", "--correction",
                      "tis-tokn", "--out", str(tmp_path / "bad"))
    assert code == 2 and out.startswith("error: --correction") and "tis-token" in out


def test_the_resume_command_repeats_each_correction(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    words = cli.command_line({"correction": ("tis-token", "icepop:high=4"), "top_k": 5})
    assert words[2:] == ["--correction", "tis-token", "--correction", "icepop:high=4",
                         "--top-k", "5"]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_with_corrections_give_the_full_batch_gradient(tok, agg):
    """Every correction here is row-local (token, sequence level, OPSM), so micro-batches that
    divide by the whole batch's count still sum to the full batch's gradient."""
    import copy

    from llm_bridge.trainer import accumulate_gradients

    sampler = tiny_model(tok, seed=0)
    options = {**STEP, "agg": agg, "sampler_temperature": 0.6,
               "correction": ("tis-seq", "mis-token:high=1.2", "opsm:delta=0.0")}
    batch = make_batch(sampler, tok, TASK, TrainConfig(**options),
                       data_generator=torch.Generator().manual_seed(0),
                       sample_generator=torch.Generator().manual_seed(1))
    batch.rewards = torch.rand(batch.rewards.shape, generator=torch.Generator().manual_seed(2),
                               dtype=torch.float64)
    policy = copy.deepcopy(sampler)
    with torch.no_grad():  # θ ≠ θ_old: the ratio and OPSM's drift are not trivial
        for p in policy.parameters():
            p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=torch.Generator()
                                                      .manual_seed(3)))
    grads, metrics = [], []
    for micro in (8, 3):
        model = copy.deepcopy(policy)
        metrics.append(accumulate_gradients(model, batch, TrainConfig(**options, micro_batch=micro),
                                            allowed_tokens=TASK.allowed_tokens(tok)))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    assert metrics[0]["rejected_frac"] > 0


def test_the_entropy_corrections_train_through_the_policys_entropy(tok):
    """--correction entropy-bonus reaches the model through the entropy's gradient: one step
    with a large coefficient leaves other parameters than one without; top-entropy removes
    the low-entropy tokens (rejected_frac > 0)."""
    plain = _run(tok, steps=1)
    bonus = _run(tok, steps=1, correction=("entropy-bonus:coef=1.0",))
    assert "entropy" in bonus.history[1]
    assert any(not torch.equal(a, b) for a, b in zip(
        plain.model.parameters(), bonus.model.parameters(), strict=True))
    masked = _run(tok, steps=1, correction=("top-entropy:rho=0.5",))
    assert masked.history[1]["rejected_frac"] > 0.2


def test_a_correction_reading_the_reference_needs_the_reference_model():
    with pytest.raises(ValueError, match="--no-ref-kl"):
        TrainConfig(correction=("kl-corrected",), ref_kl=False)
    TrainConfig(correction=("tis-token",), ref_kl=False)  # no reference read: fine
