"""Tasks with exact rewards: answer parsing, arithmetic, local GSM8K, the tree MDP as a task."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch

from llm_bridge.logprobs import selected_logprobs
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import GSM8K, Arithmetic, TreeTask, make_task, parse_number

DATA = Path(__file__).parent / "data" / "gsm8k_tiny.jsonl"


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.mark.parametrize(("text", "value"), [
    ("19", Fraction(19)),
    ("12 + 7 = 19", Fraction(19)),            # the last number, not the first
    ("so #### 1,250 km and 3 more", Fraction(1250)),  # the number after ####
    ("it is -2.5 degrees", Fraction(-5, 2)),
    ("no number here", None),
    ("#### none", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def _ids(tok, text):
    return [*tok.encode(text, add_special_tokens=False), tok.eos_token_id]


def test_arithmetic_rewards_exact_answers_and_holds_out_a_fixed_split(tok):
    task = Arithmetic(max_operand=9, ops="+*", n_eval=30, seed=0)
    assert len(task.problems) == 200
    held_out = {p.key for p in task.eval_problems()}
    assert len(held_out) == 30
    drawn = task.train_problems(2000, torch.Generator().manual_seed(0))
    assert held_out.isdisjoint(p.key for p in drawn)
    problem = next(p for p in task.problems if p.text == "7*8=")
    assert task.reward(problem, _ids(tok, "56"), tok) == 1.0
    assert task.reward(problem, _ids(tok, "7*8=56"), tok) == 1.0
    assert task.reward(problem, _ids(tok, "65"), tok) == 0.0
    assert task.reward(problem, _ids(tok, ""), tok) == 0.0
    assert task.prompt_ids(problem, tok) == [tok.bos_token_id, *tok.encode(
        "7*8=", add_special_tokens=False)]


def test_gsm8k_reads_a_local_file_and_scores_the_final_number(tok):
    task = GSM8K(DATA, n_eval=2)
    assert len(task.problems) == 10 and len(task.eval_problems()) == 2
    by_answer = {p.answer: p for p in task.problems}
    assert set(by_answer) >= {"7", "2,000", "4.5", "-2"}
    assert task.reward(by_answer["2,000"], _ids(tok, "2000 km in total"), tok) == 1.0
    assert task.reward(by_answer["4.5"], _ids(tok, "#### 4.5"), tok) == 1.0
    assert task.reward(by_answer["-2"], _ids(tok, "#### 2"), tok) == 0.0


def test_gsm8k_never_downloads_and_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        GSM8K(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match="####"):
        GSM8K(bad)
    with pytest.raises(ValueError, match="data"):
        make_task("gsm8k")
    with pytest.raises(ValueError, match="task"):
        make_task("chess")


def test_tree_task_actions_are_tokens_and_rewards_are_the_trees(tok):
    task = TreeTask.random(prompts=2, vocab=3, depth=3, eos=True, seed=1)
    tree = task.tree
    allowed = task.allowed_tokens(tok)
    assert allowed.tolist() == [tok.eos_token_id, *tok.convert_tokens_to_ids(["1", "2"])]
    for n in range(tree.num_responses):
        actions = tree.tokens[n][tree.mask[n]]
        ids = allowed[actions].tolist()
        for p in range(tree.num_prompts):
            assert task.reward(task.eval_problems()[p], ids, tok) == float(tree.rewards[p, n])


def test_the_model_restricted_to_the_tree_is_a_distribution_over_its_responses(tok):
    """Σ_y π(y | x) over the N enumerated responses is 1: EOS ends a response, actions are the
    only tokens, and depth caps the length — the tree's response space, exactly."""
    task = TreeTask.random(prompts=2, vocab=3, depth=3, eos=True, seed=1)
    tree = task.tree
    model = tiny_model(tok, init_std=0.3)
    allowed = task.allowed_tokens(tok)
    for problem in task.eval_problems():
        prompt = task.prompt_ids(problem, tok)
        ids = torch.tensor([prompt + allowed[row].tolist() for row in tree.tokens])
        logp = selected_logprobs(model, ids, first_target=len(prompt), allowed_tokens=allowed,
                                 temperature=1.3)
        total = torch.where(tree.mask, logp.detach(), 0.0).sum(-1).double().exp().sum()
        assert abs(float(total) - 1.0) < 1e-5
