"""Learning-rate schedules: factors of a base learning rate as functions of the step.

Every schedule is a plain function `f(step) -> float` (or built by one), so a trainer sets
`group["lr"] = base_lr * f(step)` itself each step or hands the factor to
`torch.optim.lr_scheduler.LambdaLR`; either way the value at a step does not depend on the
steps before it, which is what exact resume needs.
"""

from __future__ import annotations

import math
from typing import Callable


def constant(step: int) -> float:
    """1 at every step."""
    return 1.0


def exponential_decay(step: int, steps: int, final_ratio: float) -> float:
    """Exponential decay from 1 at step 0 to `final_ratio` at step `steps` (held after it)."""
    return final_ratio ** (min(step, steps) / max(steps, 1))


def warmup_cooldown(warmup: int, total: int | None = None, cooldown: int = 0) -> Callable[[int], float]:
    """The factor at a step: linear warmup over `warmup` steps (reaching 1 at step warmup - 1),
    constant, then with `cooldown` > 0 linear decay to zero over the last `cooldown` of `total`."""

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / max(1, warmup))
        if cooldown > 0 and total is not None and step >= total - cooldown:
            f *= max(0.0, (total - step) / cooldown)
        return f

    return factor


def warmup_cosine(warmup: int, total: int, peak: float = 1.0) -> Callable[[int], float]:
    """Linear warmup to `peak` over `warmup` steps (reaching it at step warmup - 1), then
    cosine decay ("SGDR", Loshchilov & Hutter 2017, without restarts) to 0 at step `total`
    (held at 0 after it).

    peak: 1 for a factor of the base learning rate, or the learning rate itself; the value is
    computed as peak * (step + 1) / warmup and peak * 0.5 * (1 + cos(...)), so a trainer that
    passes its learning rate gets those floats exactly (a factor times the rate can differ in
    the last bit, which changes an Adam run).
    """
    span = max(total - warmup, 1)

    def value(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        return peak * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))

    return value
