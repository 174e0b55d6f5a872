"""Off-policy corrections that compose with any loss: importance weights, rejection masks,
sequence masks and extra per-token terms, as data.

Three policies meet in an LLM trainer: the rollout engine's policy μ that sampled the tokens
(``logp_rollout``), the old or proximal policy π_old whose recomputed log-probs the loss clips
against (``logp_old``), and the current policy π_θ (``logp``). A loss sees π_θ and π_old; a
correction sees all three and returns a ``Stage``: a constant weight per token (truncated IS,
TIS), a keep mask (masked IS, MIS; IcePop's band; rejection by a divergence statistic; OPSM's
sequence mask), or a per-token term added to the loss (a KL to a reference, an entropy bonus).
Stages compose: weights multiply, keep masks intersect, terms add.

Design decisions
----------------
* The grammar is the peers' own, with one name per axis: ``level`` (token / sequence as a
  product of token ratios / geometric, the mean of log-ratios) × action (``truncate`` or
  ``mask``) × statistic × ``ratio`` (the anchor of the mismatch ratio: ``"old"`` = π_old/μ,
  decoupled PPO; ``"current"`` = sg(π_θ)/μ, verl's bypass mode, where the caller passes μ as
  ``logp_old`` too). Presets (``tis-token``, ``mis-seq``, ``icepop``, ...) are the peers' names
  for bound keyword values, as the loss presets are.
* Where peers disagree whether a removed token stays in the token-mean denominator, every
  masking correction takes ``denominator="keep"`` (it stays, as a zero: AReaL, TRL, OpenRLHF,
  verl's IcePop) or ``"drop"`` (it leaves the batch: verl's rejection sampling, slime's MIS).
  A dropped token also leaves the mask the loss sees, so sequence-level quantities of the loss
  (GSPO's sequence ratio) are taken over the kept tokens, as in verl, whose rejection edits
  ``response_mask`` before the loss.
* Statistics of the mismatch follow ``simulator.kl``'s estimators. Peers read them in opposite
  directions (verl: estimators of KL(μ‖π) from μ's samples, k1 = log(μ/π); AReaL: KL(π‖μ),
  k1 = log(π/μ)): ``direction`` gives both; a ratio's sequence sum and mean are taken in log
  space (the product, the geometric mean). docs/corrections.md is the peer-by-peer table.
* Everything a correction computes from log-probs is a constant (detached), except the terms
  (``penalty``), which carry the gradient of π_θ. With no correction and no ``logp_rollout``
  nothing here runs: a one-policy caller gets exactly the numbers it got before.
* ``CORRECTIONS`` maps a name to a ``CorrectionSpec`` (``validation.Registry``, the
  ``BoundFunction`` rules of the loss registry: unknown names and keywords fail with the valid
  ones listed). ``Correction`` is one use of a name with keyword values; ``Correction.parse``
  reads the command line's ``name:key=value,key=value``.
* This package: the machinery in ``core`` (inputs, stages, the registry, ``Correction``,
  ``apply_corrections``), re-exported here; one module per family — ``weights`` (IS weights:
  TIS, MIS, IcePop; OPSM), ``rejection`` (rejection by a divergence statistic, the token veto,
  KPop), ``terms`` (KL and entropy terms, the top-entropy mask), ``proximal`` (AReaL's
  proximal policy) — and ``presets`` (the peers' names), imported here so that importing the
  package registers every correction.
"""

# isort: off
from simulator.corrections.core import (  # noqa: F401 -- the public names, re-exported
    AGGREGATES, CORRECTIONS, DENOMINATORS, DIRECTIONS, LEVELS, PROXIMAL_METHODS, RATIO_ANCHORS,
    STATISTICS, Applied, Correction, CorrectionInputs, CorrectionSpec, Stage, apply_corrections,
    as_corrections, drops, register_correction, register_correction_preset,
)
# the families register themselves when imported
from simulator.corrections import weights, rejection, terms, proximal, presets  # noqa: F401
from simulator.corrections.proximal import proximal_logp
from simulator.corrections.rejection import binary_kl, divergence_statistic
# isort: on

__all__ = ["CORRECTIONS", "Applied", "Correction", "CorrectionInputs", "CorrectionSpec", "Stage",
           "apply_corrections", "as_corrections", "binary_kl", "divergence_statistic", "drops",
           "proximal_logp", "register_correction", "register_correction_preset"]
