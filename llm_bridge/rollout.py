"""Sampling responses from a rollout copy of the policy, with behaviour log-probs.

Design decisions
----------------
* The sampler is written out (a KV-cached loop, not ``model.generate``) for two reasons: every
  draw comes from an explicit ``torch.Generator`` (so a run, and a resumed run, is
  reproducible), and the log-prob of each sampled token is taken from *exactly* the
  distribution it was drawn from.
* Temperature and top-p — the classic source of wrong ratios. The sampling distribution at each
  position is μ = top-p-truncate(softmax(logits / T)), renormalised over the kept tokens.
  ``logp_behavior`` is log μ(sampled token): the tempered, truncated, renormalised
  distribution that actually produced the data (not the raw softmax(logits), which is what a
  peer gets by reading log-probs from an untempered forward pass).
  The trainer's π_θ is softmax(logits / T) with the *same* T (``llm_bridge.logprobs``), so
  on-policy with top_p = 1 the ratio π_θ/μ is exactly 1 at θ = θ_old. With top_p < 1 the ratio
  is the kept mass m ≤ 1 (log ρ = log m): truncation is itself an off-policy gap; it is reported
  in the ``approx_kl``/``ratio_mean`` metrics, not hidden. T = 0 means greedy decoding
  (evaluation only): μ is a point mass and log μ = 0.
* Top-k, a sampler temperature of its own, bf16 weights (a mismatched sampler): μ is then
  top-p(top-k(softmax(logits / T_s))) of the sampler's weights, renormalised (top-k first, as
  vLLM and transformers). ``logp_behavior`` stays log μ; the trainer's recomputed log-probs
  of the same tokens under its own policy (π_old, ``Rollout.logp_old``) are carried apart
  (``llm_bridge.trainer.make_batch``), so the loss sees three policies.
* Layout: prompts left-padded to width P, responses right-padded to width R =
  ``max_new_tokens``; ``input_ids`` [B, P + R] is both. A response ends with its EOS token,
  which is part of the response (``response_mask`` True, as the tree MDP's EOS action); tokens
  after it are padding (mask False, attention 0). Positions are cumsum(attention) − 1, as in
  ``llm_bridge.logprobs``.
* ``Batch`` is one training step's data: rollouts of G groups of K responses (group-major
  rows), their rewards [G, K] and the step whose parameters sampled them.
* ``allowed_tokens`` restricts sampling (and the policy) to a subset of the vocabulary, for the
  ``tree`` task whose actions are a few tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from llm_bridge.logprobs import forward_accepts, position_ids
from simulator.policies import sampling_logprobs  # the sampler's distribution: one home
from simulator.validation import require_int, require_nonnegative

__all__ = ["Batch", "Rollout", "generate", "pad_rows", "sampling_logprobs"]


@dataclasses.dataclass
class Rollout:
    """B sampled responses: ``input_ids``/``attention_mask`` [B, P + R] (prompt then response),
    ``response_mask`` [B, R] (bool, True on sampled tokens incl. EOS), ``logp_behavior``
    [B, R] (float32, log μ of each sampled token, as the sampler drew it; 0 at padding),
    ``prompt_width`` P, and ``logp_old`` [B, R] (the trainer's log-probs of the same tokens on
    the weights that sampled, π_old; None when μ is used as π_old)."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    logp_behavior: Tensor
    prompt_width: int
    logp_old: Tensor | None = None

    @property
    def response_ids(self) -> Tensor:
        return self.input_ids[:, self.prompt_width:]

    def rows(self, index: Tensor | slice) -> Rollout:
        """The rollout of a subset of rows (a micro-batch)."""
        return Rollout(self.input_ids[index], self.attention_mask[index],
                       self.response_mask[index], self.logp_behavior[index], self.prompt_width,
                       None if self.logp_old is None else self.logp_old[index])

    def to(self, device: torch.device | str) -> Rollout:
        return Rollout(self.input_ids.to(device), self.attention_mask.to(device),
                       self.response_mask.to(device), self.logp_behavior.to(device),
                       self.prompt_width,
                       None if self.logp_old is None else self.logp_old.to(device))

    def state(self) -> dict[str, Any]:
        """Plain tensors and ints, for a checkpoint (``torch.load(weights_only=True)``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rollout:
        return cls(**state)


@dataclasses.dataclass
class Batch:
    """One step's data: G·K rollouts (group-major rows), rewards [G, K], their behaviour step.
    With several processes, each holds its share of the step's groups."""

    rollout: Rollout
    rewards: Tensor
    behavior_step: int

    def groups(self, index: slice) -> Batch:
        """The batch of groups ``index`` (a process's share)."""
        k = self.rewards.shape[1]
        start, stop, _ = index.indices(self.rewards.shape[0])
        rows = slice(start * k, stop * k)
        return Batch(self.rollout.rows(rows), self.rewards[index], self.behavior_step)

    def state(self) -> dict[str, Any]:
        return {"rollout": self.rollout.state(), "rewards": self.rewards,
                "behavior_step": self.behavior_step}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Batch:
        return cls(Rollout.from_state(state["rollout"]), state["rewards"],
                   state["behavior_step"])



def _check(prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float,
           top_p: float, top_k: int | None) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-id lists")
    require_int("max_new_tokens", max_new_tokens, 1)
    require_nonnegative("temperature", temperature)
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None:
        require_int("top_k", top_k, 1)


def pad_rows(rows: Sequence[Sequence[int]], value: int, *, left: bool,
             device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Token-id lists as ids [B, W] padded with ``value`` on the left (prompts) or the right
    (responses, answers) to the longest, and their attention mask [B, W] (1 on tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, where] = torch.tensor(list(row), dtype=torch.long)
        mask[i, where] = 1
    return ids.to(device), mask.to(device)


def _draw(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None,
          top_k: int | None = None) -> tuple[Tensor, Tensor]:
    """(index [B], log μ(index) [B]) of one sampling step (greedy when T = 0)."""
    if temperature == 0.0:
        index = logits.argmax(dim=-1)
        return index, torch.zeros(index.shape, dtype=torch.float32, device=logits.device)
    logp = sampling_logprobs(logits, temperature, top_p, top_k)
    index = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return index, logp.gather(-1, index.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    allowed_tokens: Tensor | None = None,
) -> Rollout:
    """Sample one response per prompt (token-id lists) from ``model``; see the module docstring.

    ``generator`` must live on the model's device (None only for greedy decoding, T = 0).
    """
    _check(prompts, max_new_tokens, temperature, top_p, top_k)
    if temperature > 0 and not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator when temperature > 0")
    device = next(model.parameters()).device
    ids, mask = pad_rows(prompts, pad_token_id, left=True, device=device)
    b, width = ids.shape
    allowed = None if allowed_tokens is None else allowed_tokens.to(device)
    cache_name = "cache" if forward_accepts(model, "cache") else "past_key_values"
    tokens = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    valid = torch.zeros((b, max_new_tokens), dtype=torch.bool, device=device)
    logps = torch.zeros((b, max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    step_ids, attention, positions = ids, mask, position_ids(mask)
    cache = None
    for step in range(max_new_tokens):
        kwargs = {} if cache is None else {cache_name: cache}
        out = model(input_ids=step_ids, attention_mask=attention, position_ids=positions,
                    use_cache=True, **kwargs)
        cache = getattr(out, cache_name)
        logits = out.logits[:, -1]
        if allowed is not None:
            logits = logits[:, allowed]
        index, logp = _draw(logits, temperature, top_p, generator, top_k)
        token = index if allowed is None else allowed[index]
        alive = ~finished
        tokens[:, step] = torch.where(alive, token, torch.full_like(token, pad_token_id))
        logps[:, step] = torch.where(alive, logp, torch.zeros_like(logp))
        valid[:, step] = alive
        finished = finished | (alive & (token == eos_token_id))
        if bool(finished.all()):
            break
        step_ids = tokens[:, step: step + 1]
        attention = torch.cat([attention, alive.long().unsqueeze(-1)], dim=-1)
        positions = positions[:, -1:] + 1
    input_ids = torch.cat([ids, tokens], dim=-1)
    attention_mask = torch.cat([mask, valid.long()], dim=-1)
    return Rollout(input_ids, attention_mask, valid, logps, width)
