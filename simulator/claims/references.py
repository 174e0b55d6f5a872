"""The references a claim's ``source`` may cite: one home for every citation of the catalogue.

Design decisions
----------------
* A claim's ``source`` stays a short human-readable string ("Yao et al. 2025, Eq. 4"); this
  table maps each short form (the key) to the full citation, and ``cited`` reads the keys back
  out of a source. ``tests/test_claims.py`` holds every claim to the rule ``check_source``
  states: each "; "-separated part of a source names a known reference, and a part that cites
  Yao et al. 2025 names one of its known anchors (``PAPER_ANCHORS``) — never a bare "§N" or a
  section number that is only the numbering of someone's notes.
* ``PAPER_ANCHORS`` holds only what is known of the paper's own numbering (the derivation is
  its Sec. 2.2, the closed-form optimum its Eq. 4, the pairwise square loss its Eq. 6 with a
  coverage condition after it, OPMD's square-loss penalty its Sec. 4.2, the learning-rate vs
  clip ablation its App. B.4, a multi-step appendix) and the names it gives to its ideas (its
  two principles, the REC family, RED-Weight, OPMD and AsymRE read as regularised
  REINFORCE). A result the paper does not state is credited to its real source, or to
  "our derivation": grlab's, derived and checked here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PAPER", "PAPER_ANCHORS", "REFERENCES", "check_source", "cited"]

PAPER = "Yao et al. 2025"

REFERENCES: Mapping[str, str] = {
    PAPER: "C. Yao, Y. Chen, Y. Sun, Y. Chen, W. Zhang, X. Pan, Y. Li, B. Ding, \"Group-Relative "
           "REINFORCE Is Secretly an Off-Policy Algorithm: Demystifying Some Myths About GRPO "
           "and Its Friends\", arXiv 2509.24203 (2025), ICLR 2026; code and released configs: "
           "Trinity-RFT, examples/rec_gsm8k",
    "our derivation": "grlab (derived here): a statement of this project, derived in the "
                      "claim's docstring and checked by its routes, not read in a paper",
    "importance sampling (standard)": "the importance-sampling identity E_μ[(π/μ)·f] = E_π[f] "
                                      "where μ covers π (e.g. A. B. Owen, Monte Carlo theory, "
                                      "methods and examples, 2013, ch. 9)",
    "Schulman 2020": "J. Schulman, \"Approximating KL Divergence\", blog note, 2020 "
                     "(the estimators k1, k2, k3)",
    "Shao et al. 2024": "Z. Shao et al., \"DeepSeekMath: Pushing the Limits of Mathematical "
                        "Reasoning in Open Language Models\", arXiv 2402.03300 (2024) (GRPO)",
    "Liu et al. 2025 (Dr.GRPO)": "Z. Liu et al., \"Understanding R1-Zero-Like Training: A "
                                 "Critical Perspective\", arXiv 2503.20783 (2025) (Dr.GRPO)",
    "Liu et al. 2025 (MIS)": "J. Liu et al., \"When Speed Kills Stability: Demystifying RL "
                             "Collapse from the Training-Inference Mismatch\", blog, 2025 "
                             "(masked importance sampling)",
    "Kimi k1.5": "Kimi Team, \"Kimi k1.5: Scaling Reinforcement Learning with LLMs\", arXiv "
                 "2501.12599 (2025) (online policy mirror descent, OPMD)",
    "Arnal et al. 2025": "C. Arnal et al., \"Asymmetric REINFORCE for off-Policy Reinforcement "
                         "Learning: Balancing positive and negative rewards\", arXiv 2506.20520 "
                         "(2025) (AsymRE)",
    "Gao et al. 2024 (REBEL)": "Z. Gao et al., \"REBEL: Reinforcement Learning via Regressing "
                               "Relative Rewards\", NeurIPS 2024, arXiv 2404.16767",
    "Zheng et al. 2025 (GSPO)": "C. Zheng et al., \"Group Sequence Policy Optimization\", arXiv "
                                "2507.18071 (2025)",
    "MiniMax-M1 (CISPO)": "MiniMax, \"MiniMax-M1: Scaling Test-Time Compute Efficiently with "
                          "Lightning Attention\", arXiv 2506.13585 (2025) (CISPO)",
    "Yao et al. (TIS)": "F. Yao et al., \"Your Efficient RL Framework Secretly Brings You "
                        "Off-Policy RL Training\", blog, 2025 (truncated importance sampling)",
    "Ring-1T (IcePop)": "Ling Team, \"Every Step Evolves: Scaling Reinforcement Learning for "
                        "Trillion-Scale Thinking Model\" (Ring-1T), arXiv 2510.18855 (2025) "
                        "(IcePop)",
    "DeepSeek-V3.2": "DeepSeek-AI, \"DeepSeek-V3.2\", arXiv 2512.02556 (2025) (off-policy "
                     "sequence masking, OPSM, its eq. 9)",
    "Fu et al. 2025": "W. Fu et al., \"AReaL: A Large-Scale Asynchronous Reinforcement Learning "
                      "System for Language Reasoning\", arXiv 2505.24298 (2025) (decoupled PPO)",
    "Espeholt et al. 2018": "L. Espeholt et al., \"IMPALA: Scalable Distributed Deep-RL with "
                            "Importance Weighted Actor-Learner Architectures\", ICML 2018 "
                            "(V-trace truncation)",
    "Ye et al. 2020": "D. Ye et al., \"Mastering Complex Control in MOBA Games with Deep "
                      "Reinforcement Learning\", AAAI 2020 (dual-clip PPO)",
    "Holtzman et al. 2020": "A. Holtzman et al., \"The Curious Case of Neural Text "
                            "Degeneration\", ICLR 2020 (nucleus, top-p, sampling)",
    "Haarnoja et al. 2017": "T. Haarnoja et al., \"Reinforcement Learning with Deep "
                            "Energy-Based Policies\", ICML 2017 (soft Q-learning, the soft "
                            "Bellman equation)",
    "Mei et al. 2020": "J. Mei et al., \"On the Global Convergence Rates of Softmax Policy "
                       "Gradient Methods\", ICML 2020",
    "Trinity-RFT": "Trinity-RFT 0.6.0 (the paper's code): trinity/algorithm/policy_loss_fn/, "
                   "advantage_fn/",
    "verl": "verl 0.9.1: verl/trainer/ppo/core_algos.py, rollout_corr_helper.py",
    "TRL": "TRL 1.16.0: trl/trainer/grpo_trainer.py",
    "AReaL": "AReaL at commit 4aef98d: areal/api/cli_args.py, areal/utils/functional/",
}

# What is known of the paper's own numbering and names; nothing else of it may be cited.
PAPER_ANCHORS: tuple[str, ...] = (
    "Sec. 2.2", "Eq. 4", "Eq. 6", "the coverage condition after Eq. 6", "Sec. 4.2", "App. B.4",
    "the multi-step appendix", "Principle 1", "Principle 2", "Pitfall 1", "the REC family",
    "RED-Weight", "RED-Drop", "AsymRE as regularised REINFORCE",
)

# a section, step or paragraph number, or a bare §: the numbering of a notes file
_NUMBERED = re.compile(r"§|\b(?:Sec|Section|step|Step)\.?\s*\d")


def cited(source: str) -> tuple[str, ...]:
    """The reference keys ``source`` names, in the order they first appear."""
    found = [(source.find(key), key) for key in REFERENCES if key in source]
    return tuple(key for _, key in sorted(found))


def check_source(source: str) -> None:
    """Raise ``ValueError`` (one line, naming the part) unless every "; "-separated part of
    ``source`` names a known reference, each part citing the paper names a known anchor, and
    no number is a section, step or "§" other than a known anchor's."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a non-empty string, got {source!r}")
    for part in source.split("; "):
        if not cited(part):
            raise ValueError(f"source part {part!r} names no known reference "
                             f"(simulator/claims/references.py: REFERENCES)")
        anchors = [a for a in PAPER_ANCHORS if a in part]
        if PAPER in part and not anchors:
            raise ValueError(f"source part {part!r} cites {PAPER} without a known anchor "
                             f"(one of {', '.join(PAPER_ANCHORS)})")
        rest = part
        for anchor in anchors:
            rest = rest.replace(anchor, "")
        if _NUMBERED.search(rest):
            raise ValueError(f"source part {part!r} cites a numbered section or step that is "
                             "not a known anchor of the paper")
