"""The lab's problem suite: named families of seeded problem instances.

A ``Family`` fixes a problem (``dynamics.Problem``), the group size K and how groups enter an
update (the exact expectation, or ``groups_per_prompt`` sampled groups); each seed draws one
instance of it (``dynamics.draw_instance``: rewards, features, start). ``FAMILIES`` holds them
by name; ``simulator.lab_names.FAMILY_NAMES`` lists the same names without importing torch
(``grlab --help``), and a test keeps the two equal.

Design decisions
----------------
* ``representable`` is the default comparison's family: a log-linear policy whose 64 shared
  features exceed the P·n = 48 logits, so Φ has full rank 48 (every logit table is reachable:
  the class contains policies as close to the optimum J* as one likes), yet every weight moves
  every prompt, as in an LLM. Its start is init_scale = 1/8 = 1/√64, so the initial logits are
  N(0, 1), as in the tabular family; with init_scale 1 the logits' variance is 64 and the
  start is nearly deterministic on a random answer. On it on-policy training reaches J*, so
  on-policy is the reference stale runs are judged against.
* ``capacity-limited`` is the earlier default (``experiments.LOG_LINEAR``): 16 shared features
  for 48 logits. On-policy training ends at a local optimum of that class (about 0.55), below
  what stale clipped runs reach: a property of the class, kept as a named family.
* Trees share one log-linear tree policy (``tree-depth-3`` is ``experiments.TREE``) and
  K = 3; enumeration of the exact update grows as N^K/K! (N = 3, 5, 15 responses at depth
  1, 2, 3).
* ``retarget`` turns any experiment into the same curves on a family: problem, K, and for a
  sampled family every curve's groups; an experiment's curves are never changed otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from simulator.dynamics import BanditProblem, Instance, Problem, TreeProblem, draw_instance
from simulator.lab_names import DEFAULT_FAMILY
from simulator.validation import Registry, require_choice, require_int

if TYPE_CHECKING:
    from simulator.curves import Experiment

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "family"]


@dataclasses.dataclass(frozen=True)
class Family:
    """A named problem family: ``problem`` (seeds draw its instances), group size K, and
    ``groups``: "expected" (the exact expected update) or "sampled" (``groups_per_prompt``
    groups per prompt and step). ``representable``: whether the policy class reaches every
    logit table, so that its best reward is the instance's optimum J* (a property)."""

    name: str
    description: str
    problem: Problem
    group_size: int
    groups: str = "expected"
    groups_per_prompt: int = 16

    def __post_init__(self) -> None:
        require_choice("groups", self.groups, ("expected", "sampled"))
        require_int("group_size", self.group_size, 2)
        require_int("groups_per_prompt", self.groups_per_prompt, 1)

    @property
    def representable(self) -> bool:
        """Tabular, or log-linear with at least as many features as logits: random N(0, 1)
        features then have full rank (with probability 1; tests check it per seed), so every
        logit table Φ·w is reachable."""
        if self.problem.policy == "tabular":
            return True
        return self.problem.features >= self.instance(0).features[..., 0].numel()

    def instance(self, seed: int) -> Instance:
        """The instance ``seed`` draws: the same one every experiment trains on."""
        return draw_instance(self.problem, seed)

    def retarget(self, exp: Experiment, group_size: int | None = None) -> Experiment:
        """``exp`` with this family's problem and K (``group_size`` when given); on a sampled
        family every curve samples its groups (``groups_per_prompt`` per prompt)."""
        arms = exp.arms if self.groups == "expected" else tuple(
            dataclasses.replace(curve, groups="sampled") for curve in exp.arms)
        return dataclasses.replace(
            exp, title=f"{exp.title} (family: {self.name})", arms=arms, problem=self.problem,
            group_size=self.group_size if group_size is None else group_size,
            groups_per_prompt=self.groups_per_prompt)


# the earlier default: 16 shared features for 8 × 6 logits (experiments.LOG_LINEAR)
_CAPACITY_LIMITED = BanditProblem(prompts=8, responses=6, reward="binary", correct=1,
                                  policy="log-linear", features=16)
_REPRESENTABLE = dataclasses.replace(_CAPACITY_LIMITED, features=64, init_scale=0.125)
_TREE = TreeProblem(prompts=4, vocab=3, depth=3, eos=True, reward="graded",
                    policy="log-linear", features=16)

FAMILIES: Registry = Registry("family", {fam.name: fam for fam in (
    Family("representable", "8 prompts × 6 answers, one correct; log-linear, 64 shared "
           "features ≥ 48 logits (Φ full rank), start logits N(0, 1); K = 4, exact",
           _REPRESENTABLE, 4),
    Family("capacity-limited", "8 prompts × 6 answers, one correct; log-linear, 16 shared "
           "features < 48 logits (the optimum is not in the class); K = 4, exact",
           _CAPACITY_LIMITED, 4),
    Family("tabular", "8 prompts × 6 answers, one correct; tabular logits (no sharing); "
           "K = 4, exact", dataclasses.replace(_CAPACITY_LIMITED, policy="tabular"), 4),
    Family("graded", "the representable family with graded rewards U[0, 1)",
           dataclasses.replace(_REPRESENTABLE, reward="graded"), 4),
    Family("sampled", "the representable family, 16 sampled groups per prompt and step "
           "instead of the exact expectation", _REPRESENTABLE, 4, groups="sampled"),
    Family("tree-depth-1", "token tree, vocab 3, depth 1 (3 one-token responses), 4 prompts, "
           "graded; log-linear, 16 features; K = 3, exact",
           dataclasses.replace(_TREE, depth=1), 3),
    Family("tree-depth-2", "token tree, vocab 3, depth 2 (7 responses of 1–2 tokens), "
           "4 prompts, graded; log-linear, 16 features; K = 3, exact",
           dataclasses.replace(_TREE, depth=2), 3),
    Family("tree-depth-2-binary", "tree-depth-2 with one correct response per prompt",
           dataclasses.replace(_TREE, depth=2, reward="binary"), 3),
    Family("tree-depth-3", "token tree, vocab 3, depth 3 (15 responses of 1–3 tokens), "
           "4 prompts, graded; log-linear, 16 features; K = 3, exact (experiments.TREE)",
           _TREE, 3),
)})

def family(name: str) -> Family:
    """The family ``name``; an unknown name is a one-line ``KeyError`` with "did you mean"."""
    return FAMILIES[name]
