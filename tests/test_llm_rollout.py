"""Sampling: behaviour log-probs of the distribution that sampled (temperature, top-p), layout."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

import torch

from llm_bridge.logprobs import selected_logprobs
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.rollout import generate, sampling_logprobs


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    return tok, tiny_model(tok, init_std=0.3)


def _rollout(setup, seed=0, **kwargs):
    tok, model = setup
    prompts = [tok.encode(t, add_special_tokens=False) for t in ("1+2=", "13+4=", "7=")]
    options = {"max_new_tokens": 6, "temperature": 0.7, "top_p": 1.0, **kwargs}
    return generate(model, prompts, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    generator=torch.Generator().manual_seed(seed), **options)


@torch.no_grad()
def _training_logprobs(setup, rollout, temperature):
    return selected_logprobs(setup[1], rollout.input_ids, rollout.attention_mask,
                             temperature=temperature, first_target=rollout.prompt_width)


def test_on_policy_the_ratio_is_one_at_temperature_not_one(setup):
    """π_θ uses the sampler's temperature: log π_θ − log μ = 0 on every sampled token (KV-cached
    sampling vs one full forward: fp32 round-off only). Reading log-probs at T = 1 instead
    (the classic bug) is far off."""
    rollout = _rollout(setup, temperature=0.7)
    mask = rollout.response_mask
    gap = (_training_logprobs(setup, rollout, 0.7) - rollout.logp_behavior)[mask]
    assert float(gap.detach().abs().max()) < 1e-5
    wrong = (_training_logprobs(setup, rollout, 1.0) - rollout.logp_behavior)[mask]
    assert float(wrong.detach().abs().max()) > 0.05


def test_with_top_p_the_behaviour_logprob_is_the_truncated_renormalised_one(setup):
    """log μ − log π_T = −log m, m = the kept mass, computed here independently per position."""
    model = setup[1]
    rollout = _rollout(setup, temperature=0.7, top_p=0.6, max_new_tokens=4)
    logp = _training_logprobs(setup, rollout, 0.7)
    ids, att = rollout.input_ids, rollout.attention_mask
    logits = model(input_ids=ids, attention_mask=att,
                   position_ids=(att.cumsum(-1) - 1).clamp(min=0)).logits.detach()
    width = rollout.prompt_width
    for row in range(ids.shape[0]):
        for t in range(rollout.response_mask.shape[1]):
            if not rollout.response_mask[row, t]:
                continue
            probs = sorted(torch.softmax(logits[row, width + t - 1] / 0.7, -1).tolist(),
                           reverse=True)
            kept, mass = 0.0, 0
            while kept < 0.6:  # the smallest prefix of the sorted probabilities reaching 0.6
                kept, mass = kept + probs[mass], mass + 1
            gap = float(rollout.logp_behavior[row, t] - logp[row, t])
            assert math.isclose(gap, -math.log(kept), abs_tol=1e-5)


def test_sampling_frequencies_follow_the_truncated_tempered_distribution():
    """10,000 draws from one logit vector: empirical frequencies within 5 standard errors of
    exp(sampling_logprobs), and no draw outside the top-p set."""
    from llm_bridge.rollout import _draw

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(10_000, 5)
    probs = sampling_logprobs(logits[:1], 0.8, 0.9).exp()[0]
    index, logp = _draw(logits, 0.8, 0.9, torch.Generator().manual_seed(0))
    freq = torch.bincount(index, minlength=5).double() / 10_000
    se = (probs.double() * (1 - probs.double()) / 10_000).sqrt()
    assert bool(((freq - probs.double()).abs() <= 5 * se + 1e-12).all())
    assert probs[-1] == 0 and bool((freq[probs == 0] == 0).all())
    torch.testing.assert_close(logp, probs.log()[index])


def test_layout_eos_is_part_of_the_response_and_padding_follows(setup):
    tok, _ = setup
    rollout = _rollout(setup, max_new_tokens=12, temperature=1.5)
    resp, mask = rollout.response_ids, rollout.response_mask
    assert rollout.input_ids.shape == (3, rollout.prompt_width + 12)
    for row in range(3):
        valid = resp[row][mask[row]].tolist()
        assert mask[row].tolist() == [True] * len(valid) + [False] * (12 - len(valid))
        assert tok.eos_token_id not in valid[:-1]  # EOS can only be the last valid token
        assert bool((resp[row][~mask[row]] == tok.pad_token_id).all())
        assert bool((rollout.logp_behavior[row][~mask[row]] == 0).all())
    torch.testing.assert_close(rollout.attention_mask[:, rollout.prompt_width:].bool(), mask)


def test_sampling_is_reproducible_from_the_generator(setup):
    a, b, c = _rollout(setup, seed=3), _rollout(setup, seed=3), _rollout(setup, seed=4)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_greedy_decoding_is_the_argmax_with_log_prob_zero(setup):
    rollout = _rollout(setup, temperature=0.0, max_new_tokens=3)
    logp = _training_logprobs(setup, rollout, 1e-4)  # T → 0: the argmax has log-prob → 0
    assert bool((rollout.logp_behavior == 0).all())
    assert float(logp[rollout.response_mask].abs().max()) < 1e-3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
])
def test_bad_sampling_settings_name_the_argument(setup, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _rollout(setup, **kwargs)
