"""Off-policyness as a schedule: which parameters produced the data trained on at step t.

The one home of the paper's off-policy knobs (``sync_interval``, ``sync_offset``, ``offline``),
shared by the exact lab (``simulator.dynamics``) and the LLM trainer (``llm_bridge.trainer``).
Pure Python: importing it loads no torch, so command-line defaults can name the settings.
"""

from __future__ import annotations

import dataclasses

from simulator.validation import require_int, require_nonnegative, require_positive

__all__ = ["SETTINGS", "Schedule"]


@dataclasses.dataclass(frozen=True, repr=False)
class Schedule:
    """Which policy produced the data used at training step t (t = 0, 1, …).

    behavior_step(t) = 0 when ``offline``, else ⌊max(t − d, 0)/m⌋·m with m = ``sync_interval``
    and d = ``sync_offset``: the rollout model holds the trainer's weights of the last sync
    (every m steps) and runs d steps ahead. On-policy is m = 1, d = 0. The paper's settings:
    m = 20 (staleness cycles 0..19), d = 10 (data 10 updates old), offline.

    A mismatched sampler (the exact lab only, ``simulator.dynamics``): the parameters of
    behavior_step(t) are π_old, the proximal policy the loss's ratio is taken against, and the
    groups are sampled by μ with logits z_old/T + σ·ε — T = ``rollout_temperature``,
    σ = ``rollout_noise``, ε a fixed N(0, 1) draw per run (the rollout engine's systematic
    numerical difference). The defaults (T = 1, σ = 0) make μ = π_old: one policy.
    """

    sync_interval: int = 1
    sync_offset: int = 0
    offline: bool = False
    rollout_temperature: float = 1.0
    rollout_noise: float = 0.0

    def __post_init__(self) -> None:
        require_int("sync_interval", self.sync_interval, 1)
        require_int("sync_offset", self.sync_offset, 0)
        require_positive("rollout_temperature", self.rollout_temperature)
        require_nonnegative("rollout_noise", self.rollout_noise)

    def __repr__(self) -> str:
        """The dataclass's repr, less the sampler fields at their defaults (one policy)."""
        text = (f"Schedule(sync_interval={self.sync_interval!r}, "
                f"sync_offset={self.sync_offset!r}, offline={self.offline!r}")
        if self.rollout_temperature != 1.0:
            text += f", rollout_temperature={self.rollout_temperature!r}"
        if self.rollout_noise:
            text += f", rollout_noise={self.rollout_noise!r}"
        return text + ")"

    @property
    def mismatched(self) -> bool:
        """Whether the sampler μ differs from π_old (three policies)."""
        return self.rollout_temperature != 1.0 or self.rollout_noise != 0.0

    def behavior_step(self, step: int) -> int:
        if self.offline:
            return 0
        return (max(step - self.sync_offset, 0) // self.sync_interval) * self.sync_interval

    def sampled_at(self, step: int) -> list[int]:
        """The steps u ≥ ``step`` whose data the parameters of ``step`` produce: b(u) = step.

        What a rollout engine synced at ``step`` samples ahead. Offline only step 0's policy
        ever samples, for every step: that is infinite, so offline is a ``ValueError`` here
        (callers sample each step from the frozen θ_0 when it is due)."""
        if self.offline:
            raise ValueError("an offline schedule samples every step from step 0's policy")
        found, u = [], step
        while self.behavior_step(u) <= step:
            if self.behavior_step(u) == step:
                found.append(u)
            u += 1
        return found

    @property
    def label(self) -> str:
        parts = []
        if self.offline:
            parts.append("offline")
        if self.sync_interval != 1 and not self.offline:
            parts.append(f"sync_interval={self.sync_interval}")
        if self.sync_offset and not self.offline:
            parts.append(f"sync_offset={self.sync_offset}")
        if self.rollout_temperature != 1.0:
            parts.append(f"rollout_temperature={self.rollout_temperature:g}")
        if self.rollout_noise:
            parts.append(f"rollout_noise={self.rollout_noise:g}")
        return ", ".join(parts) or "on-policy"


SETTINGS: dict[str, Schedule] = {
    "on-policy": Schedule(),
    "sync-interval-20": Schedule(sync_interval=20),
    "sync-offset-10": Schedule(sync_offset=10),
    "offline": Schedule(offline=True),
}
