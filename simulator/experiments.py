"""The off-policy lab's catalogue: named curves and the experiments that compare them.

Design decisions
----------------
* An ``Experiment`` is data: a problem, the curves (a registered loss with keywords and a
  label: a ``Curve``), the off-policy settings, seeds, steps and optimiser. Running it, the
  cache and the tables live in ``simulator.reports`` (re-exported here for old callers); the
  figures in ``simulator.plots``; E6, a figure rather than curves × settings, in
  ``simulator.pitfall``.
* A ``Curve`` was called ``Arm``; in a bandit lab an arm is a response, so the name moved
  (``Arm`` stays as an alias). ``Curve.setup`` is the one place a curve's loss is resolved
  into a ``LossSetup``: the pre-flight check of ``default_comparison`` and the run use it, and
  ``simulate`` receives the built setup.
* Every argument of ``default_comparison`` is checked before any training, so a typo fails in
  one line, not minutes into a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from simulator.curves import Arm, Curve, Experiment
from simulator.dynamics import SETTINGS, Problem
from simulator.lab_names import DEFAULT_COMPARE_ARMS, DEFAULT_FAMILY, lookup
from simulator.pitfall import run_pitfall
from simulator.reports import Report, Row, run_experiment, summarise, write_report
from simulator.suite import FAMILIES
from simulator.validation import Registry, require_int, require_positive

__all__ = ["ARMS", "EXPERIMENTS", "FIGURES", "LOG_LINEAR", "REPRESENTABLE", "TREE", "Arm",
           "Curve", "Experiment", "Report", "Row", "arm", "default_comparison", "experiment_names",
           "run_experiment", "summarise", "write_report"]


WIDE = {"eps_low": 0.6, "eps_high": 2.0}
NARROW = {"eps_low": 0.2, "eps_high": 0.25}  # the paper's REC sweep (ToolACE): clip (0.2, 0.25)
# App. B.4's learning-rate multiples: clip 0.2 at ×2, ×5, ×10; the wide clip at ×1, ×2
E3_CLIP02_LR_SCALES = (2.0, 5.0, 10.0)
E3_WIDE_LR_SCALES = (1.0, 2.0)
# 8 prompts × 6 answers, one correct, 16 shared features: learning in one prompt moves the
# others, as in an LLM, and the policy class cannot reach every optimum (as an LLM of fixed
# size cannot); Adam as in the paper's runs. The suite's "capacity-limited" family.
LOG_LINEAR = FAMILIES["capacity-limited"].problem
# `grlab compare`'s default problem: the same, with 64 features ≥ 48 logits (simulator.suite)
REPRESENTABLE = FAMILIES[DEFAULT_FAMILY].problem

ARMS: dict[str, Curve] = {curve.key: curve for curve in (
    Curve.of("reinforce", "REINFORCE"),
    Curve.of("grpo", "GRPO"),
    Curve.of("rec-oneside-is", "REC-OneSide-IS"),
    Curve.of("rec-oneside-nois", "REC-OneSide-NoIS"),
    Curve.of("rec-oneside-is-wide", "REC-OneSide-IS (0.6, 2.0)", "rec-oneside-is", **WIDE),
    Curve.of("rec-oneside-nois-wide", "REC-OneSide-NoIS (0.6, 2.0)", "rec-oneside-nois", **WIDE),
    Curve.of("opmd-kimi", "OPMD (Kimi)"),
    Curve.of("asymre", "AsymRE β=0.1", beta=0.1),
    Curve.of("red-weight", "RED-Weight"),
)}


def arm(key: str) -> Curve:
    """A named arm, or any registered loss with its defaults (``grlab losses`` lists them).
    An unknown key is a ``KeyError`` listing both kinds of name, with a "did you mean"."""
    from simulator.losses import LOSSES

    if key in ARMS:
        return ARMS[key]
    lookup("loss or arm key", key, {*ARMS, *LOSSES})
    return Curve.of(key, key)


def _arms(*keys: str) -> tuple[Curve, ...]:
    return tuple(arm(k) for k in keys)


# On a bandit every response is one token and the aggregations coincide; on a tree they do not.
# The paper's released GRPO config takes the token mean (REC-OneSide-IS + std, Trinity-RFT):
# TRL's bnpo.
PAPER_GRPO = Curve.of("grpo-token-mean", "GRPO (paper's config: token mean)", "bnpo")

# The tree testbed (E1-tree, E7): 3 tokens (token 0 ends a response), depth 3 → 15 responses
# of 1–3 tokens, graded rewards, a log-linear policy over the tree's (node, token) pairs, K = 3.
# 4 prompts: each prompt's enumeration (680 groups × 3 tokens) is 12× a bandit prompt's work.
TREE = FAMILIES["tree-depth-3"].problem

# App. B.4's arms (E3, E3-base-lr): clip 0.2 at lr ×2, ×5, ×10, the wide clip at ×1, ×2,
# REINFORCE at ×2
E3_ARMS: tuple[Curve, ...] = (
    *(Curve.of(f"{key}-lr{scale:g}", f"{label} lr×{scale:g}", key, lr_scale=scale)
      for key, label in (("grpo", "GRPO (0.2)"), ("rec-oneside-nois", "REC-OneSide-NoIS (0.2)"))
      for scale in E3_CLIP02_LR_SCALES),
    *(Curve.of(f"nois-wide-lr{scale:g}", f"REC-OneSide-NoIS (0.6, 2.0) lr×{scale:g}",
               "rec-oneside-nois", lr_scale=scale, **WIDE) for scale in E3_WIDE_LR_SCALES),
    Curve.of("reinforce-lr2", "REINFORCE lr×2", "reinforce", lr_scale=2.0))

EXPERIMENTS: Registry = Registry("experiment", {exp.key: exp for exp in (
    Experiment(
        "E1", "REINFORCE vs GRPO vs REC-OneSide (IS / NoIS), clip 0.2 and (0.6, 2.0)",
        "the paper's main REC figure (GSM8K): REINFORCE is unstable on stale data; GRPO and "
        "REC rise steadily; IS ≈ NoIS; (0.6, 2.0) learns faster.",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-is-wide",
              "rec-oneside-nois-wide"),
        problem=LOG_LINEAR),
    Experiment(
        "E2", "REC-TwoSide and REC-Ring against REINFORCE and GRPO (the paper's arms; two ours)",
        "the paper's TwoSide / Ring figure (GSM8K): REINFORCE, REC-TwoSide-NoIS (0.2), "
        "REC-Ring-NoIS, REC-TwoSide-IS (0.2), GRPO; the figure has no Ring-IS arm.",
        (*_arms("reinforce"),
         Curve.of("rec-twoside-nois", "REC-TwoSide-NoIS (0.2)"),
         Curve.of("rec-ring-nois", "REC-Ring-NoIS"),
         Curve.of("rec-twoside-is", "REC-TwoSide-IS (0.2)"),
         *_arms("grpo"),
         # not in the paper's figure: ours, for comparison
         Curve.of("rec-oneside-nois", "REC-OneSide-NoIS [ours]"),
         Curve.of("rec-ring-is", "REC-Ring-IS [ours]")),
        problem=LOG_LINEAR, figures=("clipfrac",)),
    Experiment(
        "E3", "wide clip (0.6, 2.0) vs larger lr at clip 0.2",
        "the paper's App. B.4 (learning rate vs clip, sync_interval = 20 only): GRPO (0.2) and "
        "REC-OneSide-NoIS (0.2) at lr ×2, ×5, ×10; REC-OneSide-NoIS (0.6, 2.0) at ×1 and ×2; "
        "REINFORCE at ×2 — is the wide clip only a larger step?",
        E3_ARMS,
        problem=LOG_LINEAR, settings=("sync-interval-20",)),
    Experiment(
        "E4", "REP: OPMD (Kimi, Trinity) and AsymRE β = 0.1 vs REINFORCE and REC",
        "the paper's OPMD / AsymRE figure (OPMD's penalty: its Sec. 4.2): REINFORCE plus a "
        "regulariser; both stay up on stale data where REINFORCE collapses.",
        (*_arms("reinforce", "rec-oneside-nois-wide"),
         Curve.of("rec-oneside-nois", "REC-OneSide-NoIS (0.2) [ours]"),
         *_arms("opmd-kimi", "asymre"),
         Curve.of("opmd-kimi-token", "OPMD (Kimi, per-token k2)", "opmd-kimi", level="token"),
         Curve.of("opmd-kimi-tau01", "OPMD (Kimi) τ=0.1", "opmd-kimi", tau=0.1),
         Curve.of("opmd-trinity", "OPMD (Trinity)"),
         # the paper's released configs (Trinity-RFT examples/rec_gsm8k), under their names
         Curve.of("kimi-opmd-config", "Kimi's OPMD (paper's config: REC, k2 0.1, unclipped)",
                "rec",
                clip="none", regularizer="k2", reg_coef=0.1),
         Curve.of("meta-asymre-config", "Meta's AsymRE (paper's config: REC, forward-KL 0.1)",
                "rec",
                clip="none", regularizer="forward-kl", reg_coef=0.1)),
        problem=LOG_LINEAR),
    Experiment(
        "E5", "RED: RED-Drop (sampled groups) and RED-Weight vs REC",
        "the paper's RED figure (GSM8K, 1.5B): RED-Drop and RED-Weight, unclipped as released, "
        "stay high at sync_interval = 20 while REINFORCE collapses.",
        (*_arms("rec-oneside-nois-wide"),
         Curve.of("rec-oneside-nois", "REC-OneSide-NoIS (0.2) [ours]"),
         *_arms("red-weight", "reinforce"),
         Curve.of("rec-oneside-nois-sampled", "REC-OneSide-NoIS (0.2, sampled) [ours]",
                "rec-oneside-nois", groups="sampled"),
         Curve.of("red-drop", "RED-Drop (as released: unclipped; sampled)", groups="sampled"),
         # grlab's RED-Drop before it followed the released config: clipped, dropped tokens
         # not counted
         Curve.of("red-drop-oneside", "RED-Drop + REC-OneSide-NoIS (sampled) [ours]",
                "rec-oneside-nois",
                groups="sampled", advantage="red-drop", advantage_kwargs={"mask_dropped": True}),
         Curve.of("red-weight-sampled", "RED-Weight (sampled)", "red-weight", groups="sampled")),
        problem=LOG_LINEAR, settings=("on-policy", "sync-interval-20")),
    Experiment(
        "E8", "a ToolACE-style REC sweep (400 steps)",
        "the paper's REC sweep (probably ToolACE, Llama-3.2-3B): every variant rises, clip "
        "fractions about 1e-3 falling to 1e-4.",
        (Curve.of("rec-oneside-nois-narrow", "REC-OneSide-NoIS (0.2, 0.25)", "rec-oneside-nois",
                  **NARROW),
         Curve.of("rec-oneside-is-narrow", "REC-OneSide-IS (0.2, 0.25)", "rec-oneside-is",
                  **NARROW),
         Curve.of("rec-ring-nois-narrow", "REC-Ring-NoIS (0.2, 0.25)", "rec-ring-nois", **NARROW),
         # ε = ε' = (0.6, 2.0): the ring's outer arms start where its band ends
         Curve.of("rec-ring-nois-wide", "REC-Ring-NoIS (0.6, 2.0)", "rec-ring-nois", **WIDE),
         *_arms("rec-oneside-nois-wide"),
         Curve.of("rec-twoside-nois-narrow", "REC-TwoSide-NoIS (0.2, 0.25)", "rec-twoside-nois",
                  **NARROW),
         Curve.of("rec-twoside-nois-wide", "REC-TwoSide-NoIS (0.6, 2.0)", "rec-twoside-nois",
                  **WIDE)),
        problem=LOG_LINEAR, settings=("sync-interval-20",), steps=400, figures=("clipfrac",)),
    Experiment(
        "E3-base-lr", "E3 at a base Adam lr of 0.03 instead of 0.1",
        "App. B.4 again (a condition): whether clip 0.2 at ×10 is stable, and REINFORCE at ×2 "
        "collapses, depends on the base step.",
        E3_ARMS, problem=LOG_LINEAR, settings=("sync-interval-20",), lr=0.03),
    Experiment(
        "E1-lr", "E1's finding across learning rates: Adam lr 0.03, 0.1, 0.3",
        "— (robustness): the collapse of stale REINFORCE and the stability of clipping should "
        "not hinge on one learning rate.",
        tuple(dataclasses.replace(arm(key), key=f"{key}-lr{scale:g}",
                                  label=f"{arm(key).label} lr {0.1 * scale:g}",
                                  lr_scale=scale)
              for key in ("reinforce", "grpo", "rec-oneside-nois", "rec-oneside-nois-wide")
              for scale in (0.3, 1.0, 3.0)),
        problem=LOG_LINEAR),
    Experiment(
        "E1-tabular", "E1 with a tabular policy (no shared parameters between prompts)",
        "— (a condition): does the collapse need generalisation across prompts?",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide"),
        problem=dataclasses.replace(LOG_LINEAR, policy="tabular")),
    Experiment(
        "E1-tabular-graded", "E1 with a tabular policy and graded rewards U[0, 1)",
        "the paper's Pitfall 1, at scale: off-policy REINFORCE drifts to argmax μ·(r − E_μ r), "
        "not to argmax r, once rewards are graded.",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide"),
        problem=dataclasses.replace(LOG_LINEAR, policy="tabular", reward="graded")),
    Experiment(
        "E1-tree", "E1 on the token-level tree (responses of 1–3 tokens, graded rewards)",
        "the main REC figure on token-level data: ratios per token, responses of unequal "
        "length.",
        (*_arms("reinforce", "grpo"), PAPER_GRPO,
         *_arms("rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide")),
        problem=TREE, group_size=3),
    Experiment(
        "E7", "token- vs sequence-level ratios on a tree: GRPO vs GSPO, Kimi sequence vs "
        "token k2",
        "— (not a figure of the paper): GSPO clips the sequence ratio, GRPO each token's; "
        "Kimi's OPMD squares the sequence log-ratio, Trinity's k2 each token's.",
        (*_arms("reinforce", "grpo"), PAPER_GRPO, *_arms("rec-oneside-nois", "opmd-kimi"),
         Curve.of("gspo", "GSPO"), Curve.of("gspo-token", "GSPO-token"),
         Curve.of("opmd-kimi-token", "OPMD (Kimi, per-token k2)", "opmd-kimi", level="token")),
        problem=TREE, group_size=3),
)})

def default_comparison(arms: Sequence[str] = DEFAULT_COMPARE_ARMS,
                       settings: Sequence[str] = tuple(SETTINGS), seeds: int = 5,
                       steps: int = 150, problem: Problem = REPRESENTABLE,
                       group_size: int | None = None, lr: float = 0.1) -> Experiment:
    """``grlab compare``'s default: E1's arms plus OPMD, AsymRE and RED-Weight, on the suite's
    "representable" family (``simulator.suite``). The group size defaults to 4 on a bandit and
    3 on a tree (enumeration cost grows as N^K/K!).

    Every argument is checked here, before any training: unknown names (with the valid ones),
    repeated names, counts below 1, and a group size below 2 for a group-relative advantage."""
    require_int("seeds", seeds, 1)
    require_int("steps", steps, 1)
    require_positive("lr", lr)
    for kind, names in (("losses", arms), ("settings", settings)):
        if not names:
            raise ValueError(f"{kind} must name at least one value")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{kind} names {', '.join(map(repr, repeated))} more than once")
    for name in settings:
        lookup("setting", name, SETTINGS)
    chosen = _arms(*arms)
    k = (3 if problem.env == "tree" else 4) if group_size is None else group_size
    _check_group_size(k, chosen)
    return Experiment("compare", "the default off-policy comparison",
                      "the paper's REC, REP and RED figures: which losses stay stable when "
                      "rollouts are stale.",
                      chosen, problem=problem, settings=tuple(settings), seeds=seeds,
                      steps=steps, lr=lr, group_size=k)


def _check_group_size(k: int, arms: Sequence[Curve]) -> None:
    """K ≥ 1, every arm's keywords valid, and K ≥ 2 for an arm whose advantage is relative to
    its group (A_i = r_i − mean of the group, or with the std / leave-one-out): a group of one
    has A = 0, so such a loss would learn nothing and every curve would be flat."""
    for each in arms:
        # the setup the run will use (Curve.setup): an unknown keyword fails now, not mid-run
        kind = each.setup().advantage_kind()[0]
        if isinstance(k, int) and k < 2 and kind != "none":
            raise ValueError(
                f"group_size must be >= 2 for {each.label}, got {k}: its advantage ({kind!r}) "
                "is relative to the group of K responses, so with K = 1 every advantage is 0 "
                "and nothing is learned")
    require_int("group_size", k, 1)


def _run_e5_why(out_dir: Path) -> tuple[str, dict[str, Path]]:
    from simulator.red_why import run_e5_why  # imports this module: loaded when run

    return run_e5_why(out_dir)


# Experiments that are a figure, not arms × settings: key ↦ (title, runner(out_dir) →
# (markdown, paths)).
FIGURES: dict[str, tuple[str, Callable[[Path], tuple[str, dict[str, Path]]]]] = {
    "E6": ("Pitfall 1: off-policy REINFORCE vs mirror descent on a three-armed bandit",
           run_pitfall),
    "E5-why": ("E5's disagreement: where RED-Drop stabilises stale REINFORCE, and its exact "
               "expected update", _run_e5_why),
}


def experiment_names() -> list[str]:
    return sorted([*EXPERIMENTS, *FIGURES])
