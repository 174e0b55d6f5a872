"""The machinery of the corrections: what a correction sees (``CorrectionInputs``), what it
returns (``Stage``), the registry, ``Correction`` (one use of a name) and ``apply_corrections``
(see the package's docstring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import masked_mean, sequence_mean, sequence_sum
from simulator.validation import BoundFunction, Registry, require_choice

__all__ = ["CORRECTIONS", "Applied", "Correction", "CorrectionInputs", "CorrectionSpec", "Stage",
           "apply_corrections", "as_corrections", "drops", "register_correction",
           "register_correction_preset"]

LEVELS = ("token", "sequence", "geometric")
RATIO_ANCHORS = ("old", "current")
DENOMINATORS = ("keep", "drop")
STATISTICS = ("ratio", "k1", "k2", "k3")
AGGREGATES = ("token", "seq_sum", "seq_mean", "seq_max", "seq_min")
DIRECTIONS = ("mu-pi", "pi-mu")
PROXIMAL_METHODS = ("loglinear", "linear", "rollout")


@dataclasses.dataclass(frozen=True)
class CorrectionInputs:
    """What a correction sees: [B, T] float64 tensors with the masked positions zeroed.

    ``logp`` carries π_θ's gradient (only terms may use it with gradient); ``logp_old``,
    ``logp_rollout`` (μ; π_old when the caller gave none), ``advantages``, ``logp_ref`` and
    ``entropy`` (None when not given) are as ``policy_loss`` received them.
    """

    logp: Tensor
    logp_old: Tensor
    logp_rollout: Tensor
    advantages: Tensor
    mask: Tensor
    logp_ref: Tensor | None = None
    entropy: Tensor | None = None

    def mismatch(self, ratio: str) -> Tensor:
        """log(π_anchor/μ) per token, detached: π_old/μ (``"old"``) or π_θ/μ (``"current"``)."""
        anchor = self.logp_old if require_choice("ratio", ratio, RATIO_ANCHORS) == "old" \
            else self.logp.detach()
        return torch.where(self.mask, numerics.log_ratio(anchor, self.logp_rollout),
                           anchor.new_zeros(()))

    def at_level(self, log_ratio: Tensor, level: str) -> Tensor:
        """A per-token log-ratio [B, T] at ``level``: itself, the row's sum (the log of the
        product of the token ratios) or the row's mean (geometric), spread over the row."""
        require_choice("level", level, LEVELS)
        if level == "token":
            return log_ratio
        row = sequence_sum(log_ratio, self.mask) if level == "sequence" \
            else sequence_mean(log_ratio, self.mask)
        return row.unsqueeze(-1).expand_as(log_ratio)

    def require(self, name: str, correction: str) -> Tensor:
        """The optional input ``name`` (``logp_ref``, ``entropy``), or a ValueError naming the
        correction that needs it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"correction {correction!r} needs {name}: pass {name}=[B, T] "
                             "tensor to policy_loss")
        return value


class Stage(NamedTuple):
    """What one correction returns; ``None`` fields change nothing.

    weight:  [B, T] constants ≥ 0 multiplying each token's loss (an IS weight).
    keep:    [B, T] bool; False removes the token's loss.
    drop:    True: a removed token also leaves the aggregation's denominator (and the mask the
             loss sees); False: it stays there as a zero.
    penalty: [B, T] a term added to each token's loss, with π_θ's gradient (after weighting).
    metrics: per-token quantities [B, T], reported as means over the valid tokens.
    """

    weight: Tensor | None = None
    keep: Tensor | None = None
    drop: bool = False
    penalty: Tensor | None = None
    metrics: Mapping[str, Tensor] = {}


CorrectionFn = Callable[..., Stage]


@dataclasses.dataclass(frozen=True)
class CorrectionSpec(BoundFunction):
    """A registered correction: ``fn(inputs, **keywords) -> Stage`` with bound keyword values,
    a one-line summary and the peers or papers it follows (file and version)."""

    summary: str = ""
    follows: str = ""
    kind: str = "correction"

    def __call__(self, inputs: CorrectionInputs, **hparams: Any) -> Stage:
        return self.fn(inputs, **self.resolve(hparams))


CORRECTIONS: Registry = Registry("correction")


def register_correction(name: str, *, follows: str = "", summary: str = "",
                        inputs: tuple[str, ...] = ()) -> Callable[[CorrectionFn], CorrectionFn]:
    """Decorator: register ``fn(inputs: CorrectionInputs, *, keywords) -> Stage``; ``inputs``
    names the optional tensors it reads (``logp_ref``, ``entropy``), so a caller can tell which
    it must supply without running it."""
    def decorate(fn: CorrectionFn) -> CorrectionFn:
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")
        CORRECTIONS[name] = CorrectionSpec(name=name, fn=fn, summary=summary or first_line,
                                           follows=follows, inputs=tuple(inputs))
        return fn
    return decorate


def register_correction_preset(name: str, base: str, *, summary: str, follows: str = "",
                               **hparams: Any) -> CorrectionSpec:
    """Bind a registered correction's keywords under a peer's name (checked at import)."""
    parent = CORRECTIONS[base]
    parent.resolve(hparams)
    spec = dataclasses.replace(parent, name=name, hparams={**parent.hparams, **hparams},
                               summary=summary, follows=follows or parent.follows)
    CORRECTIONS[name] = spec
    return spec


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


@dataclasses.dataclass(frozen=True)
class Correction:
    """One correction in use: a registered name and the keyword values that override its
    bound ones. Unknown names and keywords fail here, when the correction is named."""

    name: str
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        CORRECTIONS[self.name].resolve(self.hparams)

    @classmethod
    def parse(cls, text: str) -> Correction:
        """``"tis-token"`` or ``"tis-token:high=2.0,ratio=current"`` (the command line's form);
        values are read as None, bools, ints, floats, else strings."""
        name, _, rest = text.partition(":")
        hparams: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"correction {text!r}: expected NAME or "
                                 f"NAME:key=value,key=value, got the item {item!r}")
            hparams[key.strip()] = _parse_value(value)
        return cls(name.strip(), hparams)

    def canonical(self) -> Correction:
        """The same correction written one way: keywords at their bound value left out, the
        rest sorted, numbers as floats (``tis-token:high=2`` and ``tis-token`` are one)."""
        spec = CORRECTIONS[self.name]
        bound, given = spec.resolve({}), spec.resolve(self.hparams)
        return Correction(self.name, {
            key: float(value) if isinstance(value, int) and not isinstance(value, bool)
            else value for key, value in sorted(given.items()) if value != bound[key]})

    def __str__(self) -> str:
        if not self.hparams:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.hparams.items())

    def __call__(self, inputs: CorrectionInputs) -> Stage:
        return CORRECTIONS[self.name](inputs, **self.hparams)


def as_corrections(value: str | Correction | Iterable[str | Correction] | None
                   ) -> tuple[Correction, ...]:
    """The ``corrections`` argument as a tuple of ``Correction``: None, one name or
    ``Correction``, or a sequence of them (strings are parsed as by ``Correction.parse``)."""
    if value is None:
        return ()
    if isinstance(value, str | Correction):
        value = (value,)
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(Correction.parse(item))
        elif isinstance(item, Correction):
            out.append(item)
        else:
            raise TypeError("corrections must be names, Correction objects or a sequence of "
                            f"them, got {type(item).__name__}")
    return tuple(out)


class Applied(NamedTuple):
    """The stages of a list of corrections, combined.

    weight:    [B, T] the product of the weights (1 where none), 0 where a stage removed the
               token with ``drop=False``.
    loss_mask: [B, T] bool, the mask the loss and the aggregation see: the valid tokens less
               those a ``drop=True`` stage removed.
    penalty:   [B, T] the sum of the terms, or None.
    metrics:   detached scalars (float64): each stage's metrics, ``is_weight_mean`` and
               ``rejected_frac`` (the share of valid tokens a stage removed).
    """

    weight: Tensor
    loss_mask: Tensor
    penalty: Tensor | None
    metrics: dict[str, Tensor]


def apply_corrections(corrections: Iterable[Correction], inputs: CorrectionInputs) -> Applied:
    """Run each correction on ``inputs`` and combine the stages (weights multiply, keep masks
    intersect, terms add); the order does not matter."""
    mask = inputs.mask
    weight = torch.ones_like(inputs.logp_old)
    kept = torch.ones_like(mask)
    loss_mask = mask
    penalty: Tensor | None = None
    metrics: dict[str, Tensor] = {}
    for correction in corrections:
        stage = correction(inputs)
        if stage.weight is not None:
            weight = numerics.mul(weight, stage.weight.detach())
        if stage.keep is not None:
            keep = stage.keep.detach() | ~mask
            kept = kept & keep
            if stage.drop:
                loss_mask = loss_mask & keep
        if stage.penalty is not None:
            penalty = stage.penalty if penalty is None else numerics.finite(penalty + stage.penalty)
        for key, value in stage.metrics.items():
            metrics[key] = masked_mean(value.detach().to(torch.float64), mask)
    weight = torch.where(kept, weight, weight.new_zeros(()))
    metrics["is_weight_mean"] = masked_mean(weight, loss_mask)
    metrics["rejected_frac"] = masked_mean((~kept).to(torch.float64), mask)
    return Applied(weight, loss_mask, penalty, metrics)



def drops(denominator: str) -> bool:
    """Whether a token a correction removes also leaves the denominator (``"drop"``) or stays
    in it as a zero (``"keep"``)."""
    return require_choice("denominator", denominator, DENOMINATORS) == "drop"
