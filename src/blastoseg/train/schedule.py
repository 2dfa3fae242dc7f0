"""The training loop's learning-rate schedule: linear warm-up, then cosine / step / constant."""

from __future__ import annotations

import math

__all__ = ["LRSchedule"]


class LRSchedule:
    """Learning-rate factor as a function of progress: linear warm-up then cosine / step /
    constant. Progress is ``step / total_steps``, or elapsed / budget for time-budget runs."""

    def __init__(self, kind: str, *, warmup_steps: int, total_steps: int | None,
                 budget_s: float | None, min_ratio: float, step_every: int, gamma: float):
        self.kind = kind
        self.warmup_steps = int(warmup_steps or 0)
        self.total_steps = total_steps
        self.budget_s = budget_s
        self.min_ratio = float(min_ratio)
        self.step_every = max(int(step_every or 1), 1)
        self.gamma = float(gamma)
        self.last_factor = 1.0

    def progress(self, step: int, elapsed_s: float) -> float:
        parts = []
        if self.total_steps:
            parts.append(step / self.total_steps)
        if self.budget_s:
            parts.append(elapsed_s / self.budget_s)
        return min(max(parts), 1.0) if parts else 0.0

    def factor(self, step: int, elapsed_s: float) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            f = (step + 1) / self.warmup_steps
        elif self.kind == "cosine":
            p = self.progress(step, elapsed_s)
            f = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        elif self.kind == "step":
            f = self.gamma ** (step // self.step_every)
        else:
            f = 1.0
        self.last_factor = f
        return f

    def state_dict(self) -> dict:
        return {"kind": self.kind, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "budget_s": self.budget_s,
                "last_factor": self.last_factor}
