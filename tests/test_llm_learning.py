"""Learning works: REC-OneSide-NoIS raises a tiny transformer's held-out arithmetic accuracy."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("transformers")

import torch

from llm_bridge.logprobs import selected_logprobs
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import Arithmetic
from llm_bridge.trainer import TrainConfig, evaluate, supervised_warmup, train


@torch.no_grad()
def exact_accuracy(model, tok, task, problems) -> float:
    """Mean over problems of π_θ(gold answer, EOS | prompt) at T = 1: the probability that a
    sampled response is exactly the answer — a held-out accuracy with no sampling noise."""
    total = 0.0
    for problem in problems:
        prompt = task.prompt_ids(problem, tok)
        answer = [*tok.encode(problem.answer, add_special_tokens=False), tok.eos_token_id]
        logp = selected_logprobs(model, torch.tensor([prompt + answer]), first_target=len(prompt))
        total += float(logp.sum().exp())
    return total / len(problems)


class _RandomRewards:
    """The control: the same task with rewards replaced by coin flips (p = 0.4)."""

    def __init__(self, task: Arithmetic) -> None:
        self.task, self.rng, self.name = task, random.Random(0), "random-rewards"

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def reward(self, problem, response_ids, tokenizer) -> float:
        return float(self.rng.random() < 0.4)


def _warm_model(tok, task):
    model = tiny_model(tok, seed=0)
    supervised_warmup(model, tok, task, steps=100, lr=3e-3, seed=0)
    return model


def test_rec_oneside_nois_raises_held_out_accuracy_after_a_supervised_warm_up():
    """a + b with a, b ≤ 9: 70 training problems, 30 held out (never trained on). A 2-layer
    Llama (hidden 64) gets 100 supervised steps, then 60 RL steps of REC-OneSide-NoIS
    (8 prompts × 8 samples, AdamW 3e-4). Held-out exact accuracy (see ``exact_accuracy``)
    rises from 0.232 to 0.340 (greedy: 0.30 → 0.53); the control, trained identically on coin
    flip rewards, ends at 0.239 (greedy 0.33). Seeds 1 and 2 (measured once, not tested):
    0.256 → 0.319 and 0.295 → 0.362 with the reward, 0.182 and 0.146 with coin flips.
    """
    tok = char_tokenizer()
    task = Arithmetic(max_operand=9, n_eval=30, seed=0)
    held_out = task.eval_problems()
    cfg = TrainConfig(loss="rec-oneside-nois", steps=60, group_size=8, prompts_per_step=8,
                      max_new_tokens=3, lr=3e-4, ref_kl=False, eval_every=1000,
                      eval_prompts=30, seed=0)

    model = _warm_model(tok, task)
    before, greedy_before = exact_accuracy(model, tok, task, held_out), evaluate(
        model, tok, task, cfg)
    history = train(cfg, model, tok, task).history
    after, greedy_after = exact_accuracy(model, tok, task, held_out), evaluate(
        model, tok, task, cfg)

    control = _warm_model(tok, task)
    train(cfg, control, tok, _RandomRewards(task))
    control_after = exact_accuracy(control, tok, task, held_out)

    train_reward = [row["reward"] for row in history if "reward" in row]
    print(f"held-out exact accuracy {before:.3f} -> {after:.3f} (control {control_after:.3f}); "
          f"greedy {greedy_before:.2f} -> {greedy_after:.2f}; train reward "
          f"{sum(train_reward[:10]) / 10:.3f} (first 10 steps) -> "
          f"{sum(train_reward[-10:]) / 10:.3f} (last 10)")
    assert after - before > 0.05
    assert after - control_after > 0.05
    assert greedy_after > greedy_before
