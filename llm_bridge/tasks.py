"""Tasks with exact rewards: arithmetic, GSM8K (local JSONL) and the simulator's tree MDP.

Design decisions
----------------
* A task hands out ``TaskItem``s (a prompt text, a gold answer, a key) and scores a decoded
  response with an exact, deterministic reward in {0, 1} (arithmetic, GSM8K) or the tree's
  leaf reward. Held-out problems are a fixed split that training never draws from.
* Prompts are encoded by ``encode_prompt``: through the tokenizer's chat template when it has
  one (instruct models such as SmolLM2), else BOS + the plain text (the tiny char model).
* Answers are parsed as the number after ``####`` when present, else the last number in the
  response (GSM8K's convention; "12 + 7 = 19" gives 19, not 12).
* ``gsm8k`` only reads a local JSONL file (question/answer fields, gold answer after
  ``#### ``); it never downloads.
* ``tree``: ``simulator.tree.TreeMDP`` as a task. Its actions are tokens: action 0 is the
  model's EOS token when the tree has EOS (so sampling stops exactly where the tree's response
  ends), action a ≥ 1 is the token of the digit ``str(a)``; the policy is restricted to those
  tokens (``allowed_tokens``) and responses have at most ``depth`` tokens. Prompts are cycled
  in order (``P`` prompts per step give every prompt once), so a step's expected gradient is
  the simulator's (1/P)·Σ_p E_groups[·] — what the exactness test enumerates.
* ``task_fingerprint``: everything about a task that decides a run's data, for the checkpoint
  that ``--resume`` checks — the task's name, its problems and held-out split (a hash of every
  prompt text and gold answer in order), the data file's content hash (GSM8K; the content,
  not the path: a moved copy resumes), and the reward (a hash of the rule's source code, and
  for the tree its reward table). Hashes keep the checkpoint small; a refusal names the field.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from simulator.tree import TreeMDP
from simulator.validation import require_int

__all__ = [
    "GSM8K",
    "TASKS",
    "Arithmetic",
    "Problem",
    "TaskItem",
    "TreeTask",
    "encode_prompt",
    "make_task",
    "parse_number",
    "task_fingerprint",
]

TASKS = ("arithmetic", "gsm8k", "tree")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class TaskItem:
    """One prompt: ``text`` (before any chat template), ``answer`` (gold, as text), ``key``."""

    text: str
    answer: str
    key: int = 0


Problem = TaskItem  # the name before TaskItem (the lab's Problem is a family of testbeds)


def parse_number(text: str) -> Fraction | None:
    """The number after the last ``####``, else the last number in ``text`` (commas allowed)."""
    if "####" in text:
        text = text.rsplit("####", 1)[1]
        found = _NUMBER.search(text)
    else:
        matches = _NUMBER.findall(text)
        found = None if not matches else re.match(_NUMBER, matches[-1])
    if found is None:
        return None
    try:
        return Fraction(found.group(0).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def encode_prompt(text: str, tokenizer: Any, chat: bool | None = None) -> list[int]:
    """Token ids of a prompt: the chat template (with the assistant turn opened) when the
    tokenizer has one and ``chat`` is not False; else BOS (if any) + the plain text."""
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + tokenizer.encode(text, add_special_tokens=False)


def _digest(value: Any) -> str:
    """A short content hash of a JSON-able value (sha256, 16 hex digits)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source(function: Any) -> str:
    return inspect.getsource(function)


def _split(n: int, n_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """A fixed (train, eval) split of range(n): a seeded permutation, eval first."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[n_eval:], order[:n_eval]


class _ExactAnswerTask:
    """Shared by arithmetic and GSM8K: problems, a held-out split, reward = parsed == gold."""

    name = ""
    problems: list[TaskItem]
    train_index: list[int]
    eval_index: list[int]

    def allowed_tokens(self, tokenizer: Any) -> Tensor | None:
        return None

    def prompt_ids(self, problem: TaskItem, tokenizer: Any) -> list[int]:
        return encode_prompt(self.prompt_text(problem, tokenizer), tokenizer)

    def prompt_text(self, problem: TaskItem, tokenizer: Any) -> str:
        return problem.text

    def train_problems(self, n: int, generator: torch.Generator) -> list[TaskItem]:
        draws = torch.randint(len(self.train_index), (n,), generator=generator).tolist()
        return [self.problems[self.train_index[i]] for i in draws]

    def eval_problems(self) -> list[TaskItem]:
        return [self.problems[i] for i in self.eval_index]

    def fingerprint(self) -> dict[str, str]:
        """What decides this task's data (module docstring)."""
        problems = [(p.text, p.answer) for p in self.problems]
        return {"task": self.name,
                "problems": _digest([problems, self.train_index, self.eval_index]),
                "reward": _digest([_source(type(self).reward), _source(parse_number)])}

    def reward(self, problem: TaskItem, response_ids: Sequence[int], tokenizer: Any) -> float:
        text = tokenizer.decode(list(response_ids), skip_special_tokens=True)
        parsed = parse_number(text)
        return float(parsed is not None and parsed == parse_number(problem.answer))


class Arithmetic(_ExactAnswerTask):
    """a + b and a * b with 0 ≤ a, b ≤ ``max_operand``; ``n_eval`` problems held out.

    Plain prompt (no chat template): ``"12+7="``; chat prompt: "What is 12+7? Reply with only
    the number." The reward is 1 when the parsed answer equals a + b (or a·b), else 0.
    """

    name = "arithmetic"

    def __init__(self, max_operand: int = 20, ops: str = "+", n_eval: int = 40,
                 seed: int = 0) -> None:
        if not ops or set(ops) - {"+", "*"}:
            raise ValueError(f"ops must be a non-empty string of '+' and '*', got {ops!r}")
        require_int("max_operand", max_operand, 1)
        self.problems = [
            TaskItem(f"{a}{op}{b}=", str(a + b if op == "+" else a * b), key)
            for key, (op, a, b) in enumerate((op, a, b) for op in ops
                                             for a in range(max_operand + 1)
                                             for b in range(max_operand + 1))
        ]
        if not 1 <= n_eval < len(self.problems):
            raise ValueError(f"n_eval must be in [1, {len(self.problems)}), got {n_eval}")
        self.train_index, self.eval_index = _split(len(self.problems), n_eval, seed)

    def prompt_text(self, problem: TaskItem, tokenizer: Any) -> str:
        if getattr(tokenizer, "chat_template", None):
            return f"What is {problem.text[:-1]}? Reply with only the number."
        return problem.text


class GSM8K(_ExactAnswerTask):
    """Grade-school math from a local JSONL file (``question``, ``answer`` with ``#### N``)."""

    name = "gsm8k"

    def __init__(self, path: str | Path, n_eval: int | None = None, seed: int = 0) -> None:
        path = Path(path)
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"gsm8k data file {path} does not exist (the task never "
                                    "downloads: pass a local JSONL with question/answer fields)")
        self.problems = []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not {"question", "answer"} <= set(record) or "####" not in record["answer"]:
                raise ValueError(f"{path}:{line_no}: expected question and answer fields with "
                                 "the answer after '####'")
            gold = record["answer"].rsplit("####", 1)[1].strip()
            self.problems.append(TaskItem(record["question"], gold, len(self.problems)))
        if len(self.problems) < 2:
            raise ValueError(f"{path} must hold at least 2 problems, got {len(self.problems)}")
        n_eval = max(1, len(self.problems) // 5) if n_eval is None else n_eval
        self.train_index, self.eval_index = _split(len(self.problems), n_eval, seed)

    def fingerprint(self) -> dict[str, str]:
        data = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        return {**super().fingerprint(), "data_sha256": data}

    def prompt_text(self, problem: TaskItem, tokenizer: Any) -> str:
        if getattr(tokenizer, "chat_template", None):
            return f"{problem.text}\nEnd your reply with '#### ' and the final number."
        return f"Q: {problem.text}\nA:"


class TreeTask:
    """``simulator.tree.TreeMDP`` as a task: tokens are the tree's actions (module docstring)."""

    name = "tree"

    def __init__(self, tree: TreeMDP) -> None:
        if tree.vocab > 10:
            raise ValueError(f"the tree task maps actions to digit tokens: vocab must be <= 10, "
                             f"got {tree.vocab}")
        self.tree = tree
        self.index = {tuple(row[m].tolist()): n for n, (row, m) in
                      enumerate(zip(tree.tokens, tree.mask, strict=True))}

    @classmethod
    def random(cls, prompts: int = 2, vocab: int = 3, depth: int = 2, eos: bool = True,
               seed: int = 0) -> TreeTask:
        generator = torch.Generator().manual_seed(seed)
        return cls(TreeMDP.random(prompts, vocab, depth, eos, generator))

    @property
    def max_new_tokens(self) -> int:
        return self.tree.depth

    def fingerprint(self) -> dict[str, str]:
        """What decides this task's data (module docstring): the tree and its rewards."""
        tree = [self.tree.num_prompts, self.tree.vocab, self.tree.depth, self.tree.eos,
                self.tree.tokens.tolist(), self.tree.mask.tolist()]
        return {"task": self.name, "problems": _digest(tree),
                "reward": _digest([self.tree.rewards.tolist(), _source(type(self).reward),
                                   _source(type(self).actions)])}

    def allowed_tokens(self, tokenizer: Any) -> Tensor:
        """Model token id of each action [b]: EOS for action 0 (with EOS), digits otherwise."""
        ids = []
        for action in range(self.tree.vocab):
            if action == 0 and self.tree.eos:
                ids.append(tokenizer.eos_token_id)
                continue
            encoded = tokenizer.encode(str(action), add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(f"the tokenizer splits the action token {str(action)!r}")
            ids.append(encoded[0])
        return torch.tensor(ids, dtype=torch.long)

    def prompt_ids(self, problem: TaskItem, tokenizer: Any) -> list[int]:
        return encode_prompt(problem.text, tokenizer, chat=False)

    def _problem(self, p: int) -> TaskItem:
        return TaskItem(f"p{p}:", "", p)

    def train_problems(self, n: int, generator: torch.Generator) -> list[TaskItem]:
        return [self._problem(i % self.tree.num_prompts) for i in range(n)]

    def eval_problems(self) -> list[TaskItem]:
        return [self._problem(p) for p in range(self.tree.num_prompts)]

    def actions(self, response_ids: Sequence[int], tokenizer: Any) -> tuple[int, ...]:
        to_action = {int(t): a for a, t in enumerate(self.allowed_tokens(tokenizer).tolist())}
        actions = []
        for token in response_ids:
            actions.append(to_action[int(token)])
            if self.tree.eos and actions[-1] == 0:
                break
        return tuple(actions)

    def reward(self, problem: TaskItem, response_ids: Sequence[int], tokenizer: Any) -> float:
        actions = self.actions(response_ids, tokenizer)
        if actions not in self.index:
            raise ValueError(f"response {actions} is not a complete response of the tree")
        return float(self.tree.rewards[problem.key, self.index[actions]])


def make_task(name: str, *, data: str | Path | None = None, seed: int = 0) -> Any:
    """The task ``name`` (one of ``TASKS``) with its default settings."""
    if name == "arithmetic":
        return Arithmetic(seed=seed)
    if name == "gsm8k":
        if data is None:
            raise ValueError("task 'gsm8k' needs data=PATH of a local JSONL file "
                             "(question/answer fields, answers end with '#### N')")
        return GSM8K(data, seed=seed)
    if name == "tree":
        return TreeTask.random(seed=seed)
    raise ValueError(f"task must be one of {list(TASKS)}, got {name!r}")


def task_fingerprint(task: Any) -> dict[str, str]:
    """``task.fingerprint()`` (see the module docstring); a task object without one is known
    by its name only."""
    fingerprint = getattr(task, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else {"task": getattr(task, "name", "")}
