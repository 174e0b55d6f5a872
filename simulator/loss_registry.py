"""The registry of the loss zoo: names bound to per-token functions and the data that make a
named algorithm (advantage kind, aggregation, bound keywords, the peer each name follows), and
``LossSetup``, how one run feeds a named loss.

The losses themselves live in ``simulator.losses`` (the only place a loss is defined); this
module is the registry they are registered in, verl's pattern without its config objects.

Design decisions
----------------
* ``LossSpec`` is what a name means; ``LossSetup`` is what one run feeds it (keywords, an
  advantage override, aggregation, ``norm_len``, anchor). ``LossSetup.from_keywords`` is the
  one place that sorts a flat keyword mapping into setup fields and loss keywords, and
  ``LossSetup`` answers the questions every front-end asks: the advantage kind in force, the
  advantages themselves, the aggregation, and ``norm_len`` (the ``norm_len_for`` rule).
* A loss keyword may never be named like a setup field or a call option (``RESERVED``):
  ``register_loss`` refuses it, so a keyword can always be told from an option by its name.
* ``LOSSES`` is filled when ``simulator.losses`` is imported; import it from there.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import advantage_kind, shaped_advantages
from simulator.aggregation import AGGREGATIONS, ROW_COUNTS, norm_len_for
from simulator.corrections import Correction, as_corrections
from simulator.validation import BoundFunction, Registry, require_choice

__all__ = ["LOSSES", "LOSS_INPUTS", "RESERVED", "LossFn", "LossOutput", "LossRegistry",
           "LossSetup", "LossSpec", "TokenLoss", "register_loss", "register_preset"]

SETUP_FIELDS: tuple[str, ...] = ("advantage", "advantage_kwargs", "agg", "norm_len", "rows",
                                  "anchor", "corrections")
"""``LossSetup``'s fields besides the loss name and its keywords."""
LOSS_INPUTS: tuple[str, ...] = ("logp_rollout", "logp_ref", "entropy")
"""Tensors beyond (logp, logp_old, advantages, mask) a loss may read (``register_loss``'s
``inputs``): μ's log-probs, a reference policy's, per-token entropy."""
RESERVED: frozenset[str] = frozenset((
    *SETUP_FIELDS, "loss", "name", "hparams", "rows", "denominator", "token_weights",
    "validate", "method", "generator", "advantages", "looped", "logp", "logp_old", "mask",
    "logp_rollout", "logp_ref", "entropy", "rollout"))
"""Names a loss keyword may not take: ``LossSetup``'s fields and the options of
``policy_loss``, ``group_losses`` and the exact engines, which share a call with the keywords."""


class TokenLoss(NamedTuple):
    """What a per-token loss function returns.

    loss:    [B, T] per-token loss (the value at masked positions is ignored).
    clipped: [B, T] bool, True where a clipping mask removed the token's policy-gradient term.
    extras:  loss-specific per-token quantities [B, T]; reported as masked means. The key
             ``dual_clipped`` marks the part of ``clipped`` that a dual clip removed (verl's
             ``pg_clipfrac_lower``); ``pg_clipfrac`` is the rest.
    """

    loss: Tensor
    clipped: Tensor
    extras: dict[str, Tensor]


class LossOutput(NamedTuple):
    """``policy_loss``'s result: a scalar loss and a dict of detached scalar metrics."""

    loss: Tensor
    metrics: dict[str, Tensor]


LossFn = Callable[..., TokenLoss]


@dataclasses.dataclass(frozen=True)
class LossSpec(BoundFunction):
    """A registered loss: a per-token function plus the data that make it a named algorithm.

    ``follows`` names the definition the name follows (a peer's file and version, or a paper);
    docs/conventions.md has the differences and the keywords that restore each peer.
    ``inputs``: tensors beyond the four every loss gets that the function reads as keywords
    (``logp_rollout``, μ's log-probs: M2PO). ``corrections``: those a preset binds
    (decoupled PPO's IS weight); a caller's corrections are added to them. ``couples_rows``:
    a token's loss depends on other rows of the batch (a batch-wide token selection: M2PO,
    Clip-Cov, KL-Cov), so the loss of a batch is not the loss of its groups computed apart.
    """

    advantage: str = "mean"
    advantage_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    agg: str = "token-mean"
    drop_uniform_groups: bool = False
    base: str = ""
    summary: str = ""
    follows: str = ""
    corrections: tuple[Correction, ...] = ()
    kind: str = "loss"
    couples_rows: bool = False

    def __call__(self, logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor,
                 tensors: Mapping[str, Tensor | None] | None = None, **hparams: Any
                 ) -> TokenLoss:
        """The per-token loss; ``tensors`` holds the extra ``inputs`` the loss reads (a
        missing one is a ValueError naming it, except ``logp_rollout``: with one policy μ is
        π_old, so it defaults to ``logp_old``)."""
        extra = {}
        for name in self.inputs:
            value = (tensors or {}).get(name)
            if value is None and name == "logp_rollout":
                value = logp_old
            if value is None:
                raise ValueError(f"loss {self.name!r} needs {name}: pass {name}=[B, T] tensor")
            extra[name] = value
        return self.fn(logp, logp_old, adv, mask, **extra, **self.resolve(hparams))

    def advantages(self, rewards: Tensor, generator: torch.Generator | None = None, *,
                   kind: str | None = None, options: Mapping[str, Any] | None = None
                   ) -> tuple[Tensor, Tensor]:
        """(advantages [G, K], keep [G, K]) from rewards [G, K], as this loss's preset says
        (``kind``/``options``: another kind with its options; DAPO's filter still applies)."""
        return shaped_advantages(
            rewards, self.advantage if kind is None else kind, generator=generator,
            drop_uniform_groups=self.drop_uniform_groups,
            **(self.advantage_kwargs if options is None else options),
        )


class LossRegistry(Registry):
    """name -> LossSpec: a ``validation.Registry`` of kind "loss"."""

    def __init__(self) -> None:
        super().__init__("loss")


LOSSES: LossRegistry = LossRegistry()


@dataclasses.dataclass(frozen=True)
class LossSetup:
    """Which loss and how one run feeds it: the loss's keywords (``hparams``), an advantage
    override with its options, the aggregation, ``norm_len``, which rows a per-sequence mode
    counts (``rows``: "all" or "valid"; on the exact testbeds every response has a token, so
    the two agree there), an anchor policy (the exact engines' ``logp_old`` source, π_old,
    apart from the sampling policy μ) and ``corrections`` (added to the preset's own).
    ``None`` means the loss preset's own choice ("all" for ``rows``)."""

    loss: str
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advantage: str | None = None
    advantage_kwargs: Mapping[str, Any] | None = None
    agg: str | None = None
    norm_len: float | None = None
    rows: str | None = None
    anchor: Tensor | None = None
    corrections: tuple[Correction, ...] = ()

    def __post_init__(self) -> None:
        LOSSES[self.loss].resolve(self.hparams)  # unknown loss or keyword fails here
        object.__setattr__(self, "corrections", as_corrections(self.corrections))
        if self.advantage is not None:
            advantage_kind(self.advantage, "advantage")
        if self.agg is not None:
            require_choice("agg", self.agg, AGGREGATIONS)
        if self.rows is not None:
            require_choice("rows", self.rows, ROW_COUNTS)

    @classmethod
    def from_keywords(cls, loss: str, /, **options: Any) -> LossSetup:
        """The one sorter of a flat keyword mapping: ``SETUP_FIELDS`` by name, the rest are the
        loss's keywords (a name no loss may take, ``RESERVED``, so nothing is ambiguous)."""
        known = {key: value for key, value in options.items() if key in SETUP_FIELDS}
        hparams = {key: value for key, value in options.items() if key not in SETUP_FIELDS}
        return cls(loss, hparams, **known)

    @property
    def spec(self) -> LossSpec:
        return LOSSES[self.loss]

    def aggregation(self) -> str:
        """The aggregation mode in force: the caller's ``agg``, else the loss's own."""
        return self.agg or self.spec.agg

    def length_for(self, max_len: float) -> float | None:
        """``norm_len`` in force when the longest possible completion has ``max_len`` tokens."""
        return norm_len_for(self.aggregation(), max_len, self.norm_len)

    def length(self, env: Any) -> float | None:
        """``length_for`` the testbed's longest response H (``env.horizon``)."""
        return self.length_for(env.horizon)

    def advantage_kind(self) -> tuple[str, dict[str, Any]]:
        """(kind, options) in force: the override with its options, else the preset's kind
        with the preset's options updated by ``advantage_kwargs``."""
        base = dict(self.spec.advantage_kwargs) if self.advantage is None else {}
        return self.advantage or self.spec.advantage, {**base, **(self.advantage_kwargs or {})}

    def advantages(self, rewards: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
        """(advantages [G, K], keep [G, K]) from rewards [G, K] under ``advantage_kind``."""
        kind, options = self.advantage_kind()
        return self.spec.advantages(rewards, generator, kind=kind, options=options)

    def all_corrections(self) -> tuple[Correction, ...]:
        """The preset's corrections, then the caller's."""
        return (*self.spec.corrections, *self.corrections)

    def call_options(self, max_len: float) -> dict[str, Any]:
        """``policy_loss``'s ``agg``, ``norm_len``, ``rows``, the caller's corrections and the
        loss keywords, as one mapping."""
        return {"agg": self.agg, "norm_len": self.length_for(max_len),
                "rows": self.rows or "all", "corrections": self.corrections, **self.hparams}


def _refuse_reserved(name: str, fn: LossFn, inputs: tuple[str, ...] = ()) -> None:
    taken = sorted(p.name for p in inspect.signature(fn).parameters.values()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in RESERVED
                   and p.name not in inputs)
    if taken:
        raise ValueError(f"loss {name!r} has keyword(s) {taken} named like a setup field or a "
                         f"call option of policy_loss and the exact engines; rename them "
                         f"(reserved: {sorted(RESERVED)})")


def register_loss(name: str, *, advantage: str = "mean", agg: str = "token-mean",
                  summary: str = "", follows: str = "", inputs: tuple[str, ...] = (),
                  couples_rows: bool = False) -> Callable[[LossFn], LossFn]:
    """Decorator: register a per-token loss function under ``name``. ``inputs``: extra
    tensors it reads as keyword-only parameters, from ``LOSS_INPUTS``; ``couples_rows``: its
    tokens are selected over the whole batch (``LossSpec.couples_rows``)."""
    advantage_kind(advantage, "advantage")
    require_choice("agg", agg, AGGREGATIONS)
    for item in inputs:
        require_choice("inputs", item, LOSS_INPUTS)

    def decorate(fn: LossFn) -> LossFn:
        _refuse_reserved(name, fn, inputs)
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")
        LOSSES[name] = LossSpec(name=name, fn=fn, advantage=advantage, agg=agg, base=name,
                                summary=summary or first_line, follows=follows,
                                inputs=tuple(inputs), couples_rows=bool(couples_rows))
        return fn

    return decorate


def register_preset(name: str, base: str, *, summary: str, follows: str = "",
                    advantage: str | None = None, agg: str | None = None,
                    drop_uniform_groups: bool = False,
                    advantage_kwargs: Mapping[str, Any] | None = None,
                    corrections: Any = None, **hparams: Any) -> LossSpec:
    """Bind a registered loss to keyword values (and an advantage kind, and corrections: a
    name, ``Correction`` or a sequence of them) under a new name."""
    parent = LOSSES[base]
    parent.resolve(hparams)  # unknown keywords fail here, at import, not at first use
    if advantage is not None:
        advantage_kind(advantage, "advantage")
    if agg is not None:
        require_choice("agg", agg, AGGREGATIONS)
    spec = dataclasses.replace(
        parent, name=name, hparams={**parent.hparams, **hparams}, summary=summary,
        advantage=advantage or parent.advantage, agg=agg or parent.agg,
        drop_uniform_groups=drop_uniform_groups, follows=follows or parent.follows,
        advantage_kwargs=dict(advantage_kwargs if advantage_kwargs is not None
                              else parent.advantage_kwargs),
        corrections=(*parent.corrections, *as_corrections(corrections)),
    )
    LOSSES[name] = spec
    return spec
