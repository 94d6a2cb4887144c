"""The learning-rate policy of training (``lr_policy`` in the configs)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LRPolicy", "LR_POLICIES"]

LR_POLICIES = ("constant", "cosine")


@dataclass(frozen=True)
class LRPolicy:
    """Learning-rate factor per iteration, for ``torch.optim.lr_scheduler.LambdaLR`` (stepped every iteration).

    ``constant`` (published): 1 after the warm-up. ``cosine``: half a cosine from 1 down to ``final`` over
    ``num_iterations``, which lets a short run (the demo) settle into a sharp minimum at its end. Both ramp up
    linearly over the first ``warmup_iterations``. A frozen dataclass, so the scheduler's state saves and resumes.

    Args:
        policy: ``"constant"`` or ``"cosine"``.
        num_iterations: length of the run (iterations).
        warmup_iterations: linear ramp from ``1 / warmup_iterations`` to 1 (0: no warm-up).
        final: factor reached at the last iteration (cosine only).
    """

    policy: str = "constant"
    num_iterations: int = 100000
    warmup_iterations: int = 0
    final: float = 0.0

    def __post_init__(self) -> None:
        if self.policy not in LR_POLICIES:
            raise ValueError(f"lr_policy must be one of {LR_POLICIES}, got {self.policy!r}.")
        if int(self.num_iterations) < 1 or int(self.warmup_iterations) < 0:
            raise ValueError(
                f"num_iterations must be >= 1 and warmup_iterations >= 0, got {self.num_iterations}, "
                f"{self.warmup_iterations}."
            )

    def __call__(self, iteration: int) -> float:
        factor = min(1.0, (iteration + 1) / self.warmup_iterations) if self.warmup_iterations > 0 else 1.0
        if self.policy == "cosine":
            t = min(iteration, self.num_iterations) / self.num_iterations
            factor *= self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))
        return factor
