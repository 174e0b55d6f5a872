"""Selected-token log-probs (and entropy) of a Hugging Face causal LM, chunked.

Design decisions
----------------
* The loss needs one number per token, log π(y_t | y_<t), but the naive route materialises the
  fp32 logits [B, T, V] (V = 49,152 for SmolLM2), keeps them and their log-softmax for
  backward, and dominates memory. Here the decoder runs once to hidden states [B, T, H]; the
  output head is applied to ``chunk_size`` tokens at a time (flattened over batch and
  sequence) in fp32, and each chunk's log-prob is one autograd Function (``_ChunkLogProb``)
  that keeps only hidden, targets and log Z: backward recomputes the chunk's logits (one
  matmul) and writes d/dlogits = g·(onehot − p)/T directly, so at most one chunk of logits is
  alive, forward or backward. The price against the naive route is that one matmul; the
  entropy is computed only when asked for, with its gradient in the same backward.
* Temperature T: the log-probs are those of softmax(logits / T), the distribution the rollout
  samples from (``llm_bridge.rollout``). With the same T in training and rollout the ratio
  π_θ/π_old is exactly 1 on-policy (up to fp round-off); see docs/llm_bridge.md.
* ``allowed_tokens``: the policy restricted to a subset of the vocabulary (softmax over those
  ids only), used by the ``tree`` task whose actions are a few tokens. A target outside the
  subset has probability 0: its log-prob is −inf (mask it; the losses ignore masked values).
* Positions follow the attention mask (left padding): position_ids = cumsum(mask) − 1, the
  same rule the rollout uses, so a left-padded row gets the numbers it gets alone.
* ``naive_selected_logprobs`` is the twin: the model's own full logits, log_softmax, gather.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from simulator.validation import require_int, require_positive, require_tensor

__all__ = [
    "default_chunk_size",
    "logprobs_and_entropy",
    "naive_selected_logprobs",
    "position_ids",
    "selected_logprobs",
]

CHUNK_BYTES = 64 * 2**20  # fp32 logits per chunk when chunk_size is None: 64 MiB


def default_chunk_size(vocab: int) -> int:
    """Tokens per chunk so that one chunk's fp32 logits take about ``CHUNK_BYTES``."""
    return max(16, CHUNK_BYTES // (4 * vocab))


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over valid tokens only: cumsum(mask) − 1, clamped at 0 (left pads)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _check_inputs(model: Any, input_ids: Tensor, attention_mask: Tensor | None
                  ) -> tuple[Tensor, Tensor]:
    input_ids = require_tensor("input_ids", input_ids)
    if input_ids.ndim != 2 or input_ids.shape[1] < 2 or input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be a [B, T] long tensor with T >= 2, got "
                         f"{tuple(input_ids.shape)} {input_ids.dtype}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif tuple(require_tensor("attention_mask", attention_mask).shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
    config = getattr(model, "config", None)
    for unsupported in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, unsupported, None) not in (None, 1.0):
            raise ValueError(f"models with config.{unsupported} are not supported by the chunked "
                             "head (the head is assumed to be a plain linear layer)")
    return input_ids, attention_mask.long()


def _head_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float,
                 allowed: Tensor | None) -> Tensor:
    """fp32 logits/T of one chunk [n, V′] (V′ = len(allowed) when a subset is given)."""
    if allowed is not None:
        weight = weight[allowed]
        bias = None if bias is None else bias[allowed]
    logits = F.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
    return logits if temperature == 1.0 else logits / temperature


class _ChunkLogProb(torch.autograd.Function):
    """log p(target) of softmax(head(hidden)/T) for one chunk, with a hand-written backward.

    Forward keeps only hidden, the targets and log Z; backward recomputes the chunk's logits
    once (one matmul) and forms d/dlogits = g·(onehot − p)/T directly, instead of
    ``torch.utils.checkpoint``'s full re-run of the forward (logsumexp, gather and entropy
    again) followed by autograd's backward of each op. The entropy is computed only when asked
    for; it carries a gradient too (an entropy bonus trains through it): dH/dz = −p·(log p +
    H), added in the same backward only when the entropy was used.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, allowed, with_entropy):
        with torch.autocast(hidden.device.type, enabled=False):
            logits = _head_logits(hidden, weight, bias, temperature, allowed)
            log_z = torch.logsumexp(logits, dim=-1)
            valid = targets >= 0
            picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - log_z
            logp = torch.where(valid, picked, torch.full_like(picked, -torch.inf))
            entropy = (log_z - (torch.softmax(logits, dim=-1) * logits).sum(-1)
                       if with_entropy else logp.new_zeros(()).expand_as(logp))
        ctx.save_for_backward(hidden, weight, bias, targets, log_z, allowed)
        ctx.temperature = temperature
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, targets, log_z, allowed = ctx.saved_tensors
        t = ctx.temperature
        with torch.autocast(hidden.device.type, enabled=False):
            logits = _head_logits(hidden, weight, bias, t, allowed)
            log_p = logits - log_z.unsqueeze(-1)
            p = torch.exp(log_p)
            grad_logits = torch.zeros_like(logits)
            if grad_logp is not None:
                g = torch.where(targets >= 0, grad_logp, torch.zeros_like(grad_logp)).float()
                grad_logits.add_(p * -g.unsqueeze(-1))
                rows = torch.arange(len(targets), device=targets.device)
                grad_logits[rows, targets.clamp(min=0)] += g
            if grad_entropy is not None:  # dH/dz = −p·(log p + H)
                entropy = -(p * log_p).sum(-1, keepdim=True)
                grad_logits.sub_(grad_entropy.float().unsqueeze(-1) * p * (log_p + entropy))
            if t != 1.0:
                grad_logits /= t
            sub = weight if allowed is None else weight[allowed]
            grad_hidden = (grad_logits @ sub.float()).to(hidden.dtype)
            grad_sub = grad_logits.T @ hidden.float()
            if allowed is None:
                grad_weight = grad_sub.to(weight.dtype)
            else:
                grad_weight = torch.zeros_like(weight).index_add_(0, allowed,
                                                                  grad_sub.to(weight.dtype))
            grad_bias = None
            if bias is not None:
                grad_bias = grad_logits.sum(0).to(bias.dtype)
                if allowed is not None:
                    grad_bias = torch.zeros_like(bias).index_add_(0, allowed, grad_bias)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


def _targets(input_ids: Tensor, first: int, vocab: int, allowed: Tensor | None) -> Tensor:
    """Target ids [B, T − first] (indices into ``allowed`` when given, −1 if not allowed)."""
    targets = input_ids[:, first:]
    if allowed is None:
        return targets
    lookup = torch.full((vocab,), -1, dtype=torch.long, device=input_ids.device)
    lookup[allowed] = torch.arange(len(allowed), device=input_ids.device)
    return lookup[targets]


def logprobs_and_entropy(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    temperature: float = 1.0,
    first_target: int = 1,
    allowed_tokens: Tensor | None = None,
    with_entropy: bool = True,
) -> tuple[Tensor, Tensor]:
    """(log π(input_ids[:, t] | input_ids[:, :t]), entropy of π(· | input_ids[:, :t])) for
    t = ``first_target`` … T − 1: two [B, T − first_target] float32 tensors.

    π = softmax(logits / ``temperature``) (restricted to ``allowed_tokens`` when given). Both
    carry gradient to the model's parameters (the entropy's only where a loss uses it: an
    entropy bonus); detach the entropy to use it as a metric.
    ``chunk_size``: tokens (flattened over batch and sequence) whose logits exist at once;
    None picks ``default_chunk_size(V)``. Values at padded positions are meaningless: mask them.
    ``with_entropy=False`` skips the entropy (returned as zeros): about a third of a chunk's
    elementwise work when the caller only needs the log-probs.
    """
    input_ids, attention_mask = _check_inputs(model, input_ids, attention_mask)
    temperature = require_positive("temperature", temperature)
    if require_int("first_target", first_target, 1) >= input_ids.shape[1]:
        raise ValueError(f"first_target must be below T = {input_ids.shape[1]}, "
                         f"got {first_target}")
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0]
    chunk = default_chunk_size(vocab) if chunk_size is None else chunk_size
    require_int("chunk_size", chunk, 1)

    outputs = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids(attention_mask), use_cache=False)
    hidden = outputs.last_hidden_state[:, first_target - 1: -1]  # predicts tokens first..T-1
    b, t, h = hidden.shape
    flat_hidden = hidden.reshape(b * t, h)
    flat_targets = _targets(input_ids, first_target, vocab, allowed_tokens).reshape(b * t)
    pieces = [_ChunkLogProb.apply(flat_hidden[start: start + chunk],
                                  head.weight, head.bias, flat_targets[start: start + chunk],
                                  temperature, allowed_tokens, with_entropy)
              for start in range(0, b * t, chunk)]
    logp = torch.cat([p[0] for p in pieces]).reshape(b, t)
    entropy = torch.cat([p[1] for p in pieces]).reshape(b, t)
    return logp, entropy


def selected_logprobs(model: Any, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                      chunk_size: int | None = None, temperature: float = 1.0,
                      first_target: int = 1, allowed_tokens: Tensor | None = None) -> Tensor:
    """[B, T − 1]: log π(input_ids[:, t+1] | input_ids[:, :t+1]), chunked (the full fp32
    logits never exist). Arguments as in ``logprobs_and_entropy``."""
    return logprobs_and_entropy(model, input_ids, attention_mask, chunk_size=chunk_size,
                                temperature=temperature, first_target=first_target,
                                allowed_tokens=allowed_tokens, with_entropy=False)[0]


def naive_selected_logprobs(model: Any, input_ids: Tensor, attention_mask: Tensor | None = None,
                            *, temperature: float = 1.0, first_target: int = 1,
                            allowed_tokens: Tensor | None = None) -> Tensor:
    """The twin of ``selected_logprobs``: the model's full logits [B, T, V], upcast to fp32,
    log_softmax, gather. Memory O(B·T·V)."""
    input_ids, attention_mask = _check_inputs(model, input_ids, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids(attention_mask), use_cache=False).logits
    logits = logits[:, first_target - 1: -1].float()
    if allowed_tokens is not None:
        logits = logits[..., allowed_tokens]
    logp = torch.log_softmax(logits / temperature, dim=-1)
    vocab = model.get_output_embeddings().weight.shape[0]
    targets = _targets(input_ids, first_target, vocab, allowed_tokens)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets >= 0, picked, torch.full_like(picked, -torch.inf))


def forward_accepts(model: Any, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` (transformers renamed
    ``past_key_values`` to ``cache`` in 5.x)."""
    return name in inspect.signature(model.forward).parameters
