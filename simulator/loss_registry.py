"""The registry of the loss zoo: names bound to per-token functions and the data that make a
named algorithm (advantage kind, aggregation, bound keywords, the peer each name follows).

The losses themselves live in ``simulator.losses`` (the only place a loss is defined); this
module is the plain dict they are registered in, verl's pattern without its config objects.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import ADVANTAGE_KINDS, shaped_advantages
from simulator.aggregation import AGGREGATIONS
from simulator.validation import require_choice, unknown_name_message

__all__ = ["LOSSES", "LossFn", "LossOutput", "LossRegistry", "LossSpec", "TokenLoss",
           "register_loss", "register_preset"]


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
class LossSpec:
    """A registered loss: a per-token function plus the data that make it a named algorithm.

    ``follows`` names the definition the name follows (a peer's file and version, or a paper);
    docs/conventions.md has the differences and the keywords that restore each peer.
    """

    name: str
    fn: LossFn
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advantage: str = "mean"
    advantage_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    agg: str = "token-mean"
    drop_uniform_groups: bool = False
    base: str = ""
    summary: str = ""
    follows: str = ""

    def defaults(self) -> dict[str, Any]:
        """Every keyword this loss takes, with the value it gets when the caller says nothing."""
        params = inspect.signature(self.fn).parameters.values()
        found = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {**found, **self.hparams}

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Bound values overridden by the caller's; an unknown keyword is a ``TypeError``."""
        defaults = self.defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            message = unknown_name_message(f"keyword for loss {self.name!r}:", unknown[0], defaults)
            raise TypeError(message)
        return {**defaults, **overrides}

    def __call__(self, logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor,
                 **hparams: Any) -> TokenLoss:
        return self.fn(logp, logp_old, adv, mask, **self.resolve(hparams))

    def advantages(self, rewards: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
        """(advantages [G, K], keep [G, K]) from rewards [G, K], as this loss's preset says."""
        return shaped_advantages(
            rewards, self.advantage, generator=generator,
            drop_uniform_groups=self.drop_uniform_groups, **self.advantage_kwargs,
        )


class LossRegistry(dict):
    """name -> LossSpec. Rejects duplicate names; an unknown name lists the valid ones."""

    def __missing__(self, key: str) -> LossSpec:
        raise KeyError(unknown_name_message("loss", key, self))

    def __setitem__(self, key: str, value: LossSpec) -> None:
        if key in self:
            raise ValueError(f"a loss named {key!r} is already registered")
        super().__setitem__(key, value)


LOSSES: LossRegistry = LossRegistry()


def register_loss(name: str, *, advantage: str = "mean", agg: str = "token-mean",
                  summary: str = "", follows: str = "") -> Callable[[LossFn], LossFn]:
    """Decorator: register a per-token loss function under ``name``."""
    require_choice("advantage", advantage, (*ADVANTAGE_KINDS, "red-drop"))
    require_choice("agg", agg, AGGREGATIONS)

    def decorate(fn: LossFn) -> LossFn:
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")
        LOSSES[name] = LossSpec(name=name, fn=fn, advantage=advantage, agg=agg, base=name,
                                summary=summary or first_line, follows=follows)
        return fn

    return decorate


def register_preset(name: str, base: str, *, summary: str, follows: str = "",
                    advantage: str | None = None, agg: str | None = None,
                    drop_uniform_groups: bool = False,
                    advantage_kwargs: Mapping[str, Any] | None = None,
                    **hparams: Any) -> LossSpec:
    """Bind a registered loss to keyword values (and an advantage kind) under a new name."""
    parent = LOSSES[base]
    parent.resolve(hparams)  # unknown keywords fail here, at import, not at first use
    if advantage is not None:
        require_choice("advantage", advantage, (*ADVANTAGE_KINDS, "red-drop"))
    if agg is not None:
        require_choice("agg", agg, AGGREGATIONS)
    spec = dataclasses.replace(
        parent, name=name, hparams={**parent.hparams, **hparams}, summary=summary,
        advantage=advantage or parent.advantage, agg=agg or parent.agg,
        drop_uniform_groups=drop_uniform_groups, follows=follows or parent.follows,
        advantage_kwargs=dict(advantage_kwargs if advantage_kwargs is not None
                              else parent.advantage_kwargs),
    )
    LOSSES[name] = spec
    return spec
