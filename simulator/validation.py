"""Input checks shared by every public function in grlab.

One home for "what counts as bad input" so that every entry point answers the same way:
a ``TypeError`` when the kind of thing is wrong (not a tensor, integer dtype, unknown keyword),
a ``ValueError`` when the value is wrong (shape, range, NaN, empty mask). Every message names
the argument and says what was expected.

These checks are Python-side guards and run before any loss math. The value checks that need a
device→host sync (``isfinite(...).all()``) can be skipped by callers that trace the math with
``torch.func`` (see ``policy_loss(..., validate=False)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported inside the tensor checks, not here: the scalar checks (and the modules that
# only need them, such as simulator.schedule) load without torch, which keeps `grlab --help` fast.


def require_tensor(name: str, value: object) -> Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_float_tensor(name: str, value: object) -> Tensor:
    tensor = require_tensor(name, value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {tensor.dtype}")
    return tensor


def require_ndim(name: str, tensor: Tensor, ndims: Iterable[int], what: str) -> None:
    allowed = tuple(ndims)
    if tensor.ndim not in allowed:
        raise ValueError(f"{name} must be {what}, got shape {tuple(tensor.shape)}")


def require_finite(name: str, tensor: Tensor, where: Tensor | None = None) -> None:
    """Raise when ``tensor`` holds NaN or ±inf (only at positions where ``where`` is True)."""
    import torch

    bad = ~torch.isfinite(tensor)
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(f"{name} contains {count} NaN or infinite value(s) at valid positions")


def require_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")


def require_same_dtype(**tensors: Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{n}: {d}" for n, d in dtypes.items())
        raise ValueError(f"dtypes must match, got {listing}; cast them to one dtype first")


def as_bool_mask(name: str, mask: object, shape: tuple[int, ...]) -> Tensor:
    """Accept a bool or 0/1 tensor of ``shape`` and return it as bool."""
    import torch

    mask = require_tensor(name, mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be bool or hold only 0 and 1")
    return mask != 0


def require_int(name: str, value: object, low: int) -> int:
    """An int (not a bool) that is at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def require_nonnegative(name: str, value: object) -> float:
    value = require_number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def require_positive(name: str, value: object) -> float:
    value = require_number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def require_choice(name: str, value: object, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value  # type: ignore[return-value]


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """'unknown loss 'grpoo'; did you mean 'grpo'? valid: ...' — shared by every registry."""
    options = sorted(valid)
    folded = {option.casefold(): option for option in options}
    close = difflib.get_close_matches(str(name).casefold(), list(folded), n=1)
    hint = f"; did you mean {folded[close[0]]!r}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} Valid: {', '.join(options)}"


class Registry(dict):
    """name -> entry: the one mechanism behind every named collection (losses, advantage
    kinds, KL estimators, claims, experiments). It refuses a duplicate name (``ValueError``)
    and answers an unknown one with a ``KeyError`` naming the kind, the closest valid name and
    all valid names. A plain dict otherwise: iteration order is registration order."""

    def __init__(self, kind: str, *args: object, **kwargs: object) -> None:
        self.kind = kind
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __missing__(self, key: str) -> Any:
        raise KeyError(unknown_name_message(self.kind, key, self))

    def __setitem__(self, key: str, value: object) -> None:
        if key in self:
            raise ValueError(f"a {self.kind} named {key!r} is already registered")
        super().__setitem__(key, value)

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: ``@REGISTRY.register("name")`` stores the decorated object."""
        def decorate(obj: Any) -> Any:
            self[name] = obj
            return obj
        return decorate

    def lookup(self, name: str) -> str:
        """``name`` when registered, else the ``KeyError`` of ``self[name]``."""
        if name not in self:
            raise KeyError(unknown_name_message(self.kind, name, self))
        return name


@dataclasses.dataclass(frozen=True)
class BoundFunction:
    """A registered function with keyword values bound to it: what a loss and a correction
    are (``simulator.loss_registry.LossSpec``, ``simulator.corrections.CorrectionSpec``).
    ``kind`` names it in messages; ``inputs`` are the tensors beyond the usual ones that the
    caller must supply (a loss's keyword-only tensor parameters, never defaults a user sets;
    a correction's optional ``CorrectionInputs`` fields)."""

    name: str
    fn: Callable[..., Any]
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    kind: str = "function"

    def defaults(self) -> dict[str, Any]:
        """Every keyword this function takes, with the value it gets when the caller says
        nothing (the bound values over the signature's)."""
        params = inspect.signature(self.fn).parameters.values()
        found = {p.name: p.default for p in params
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self.inputs}
        return {**found, **self.hparams}

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Bound values overridden by the caller's; an unknown keyword is a ``TypeError``."""
        defaults = self.defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise TypeError(unknown_name_message(f"keyword for {self.kind} {self.name!r}:",
                                                 unknown[0], defaults))
        return {**defaults, **overrides}
