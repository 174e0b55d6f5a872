"""Random instances and small numerical tools shared by the claim checks.

Everything is drawn from an explicit ``torch.Generator`` in float64: rewards uniform on
[0, 1), logits standard normal, temperatures uniform on a stated range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP

__all__ = [
    "newton_minimise",
    "random_bandit",
    "random_behavior",
    "random_tree",
    "uniform",
    "well_sampled",
]


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_bandit(generator: torch.Generator, prompts: int, n: int) -> SoftmaxBandit:
    return SoftmaxBandit(torch.rand(prompts, n, generator=generator, dtype=torch.float64))


def random_tree(generator: torch.Generator, prompts: int, vocab: int, depth: int,
                eos: bool | None = None) -> TreeMDP:
    """A tree with uniform rewards; ``eos=None`` flips a coin for EOS."""
    if eos is None:
        eos = bool(torch.rand((), generator=generator) < 0.5)
    return TreeMDP.random(prompts, vocab, depth, eos, generator)


def random_behavior(env: SoftmaxBandit | TreeMDP, generator: torch.Generator) -> Tensor:
    """A full-support behaviour: the response distribution of random tabular logits."""
    return policy_behavior(env, random_logits(env, generator))


def well_sampled(probs: Tensor, draws: int, min_count: float = 20.0) -> bool:
    """Whether every response is expected ≥ ``min_count`` times in ``draws`` draws per prompt.

    A Monte Carlo check against the sample standard error needs it: a response never drawn
    contributes 0 to both the estimate and its sample variance, so the reported error would
    be 0 while the exact value is not (seen: |z| = 1e9 for a response of probability 1e-4).
    """
    return bool((probs * draws >= min_count).all())


def newton_minimise(f: Callable[[Tensor], Tensor], x0: Tensor, iterations: int = 60
                    ) -> tuple[Tensor, float, float]:
    """Damped Newton on a smooth f: R^d → R (exact Hessian, pseudo-inverse, step halving).

    Returns (x, ‖∇f(x)‖₂, λ_min) with λ_min the smallest eigenvalue of ∇²f(x). Near a strict
    local minimum the distance to it is at most about ‖∇f‖/λ_min, which is how the claims
    derive their tolerance for "the optimiser found the closed form".
    """
    # reverse-over-reverse: torch.func.hessian goes forward-mode, whose first use emits a
    # DeprecationWarning from inside torch (jit-scripted jvp decompositions)
    grad_f, hess_f = torch.func.grad(f), torch.func.jacrev(torch.func.jacrev(f))
    x = x0.detach().clone()
    for _ in range(iterations):
        g = grad_f(x)
        if float(g.norm()) < 1e-12:
            break
        step = -torch.linalg.pinv(hess_f(x), hermitian=True) @ g
        if float(g @ step) >= 0:  # not a descent direction: fall back to the gradient
            step = -g
        t, fx = 1.0, float(f(x))
        while float(f(x + t * step)) > fx and t > 1e-10:
            t *= 0.5
        x = x + t * step
    eigenvalues = torch.linalg.eigvalsh(hess_f(x))
    return x, float(grad_f(x).norm()), float(eigenvalues.min())
