"""What `fourdistill evaluate` runs: the methods it can score and its settings.

This module imports nothing heavy: the `evaluate` parser reads its defaults and choices from it
(fourdistill.commands.evaluate), and evaluate/control.py, which runs the evaluation, imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS

METHODS = ("mappers", "copy", "ip_adapter", "ip_adapter_phrase", "no_bypass")  # see evaluate/control.py
KINDS = ("time", "view", "joint")


@dataclass
class ControlEvalConfig:
    """What `fourdistill evaluate` runs. Pairs come from the first `scenes` EVAL_SEEDS."""

    pairs: int = 48  # per kind
    scenes: int = 200
    kinds: tuple[str, ...] = KINDS
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    ip_adapter_scale: float | None = None  # None: the scale the mappers were distilled with
    batch: int = 16
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    extra: dict = field(default_factory=dict)  # name -> mapper folder (ablations)

    def __post_init__(self):
        self.kinds = tuple(self.kinds)
        self.methods = tuple(self.methods)
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"kinds: {k!r} is not one of time, view, joint")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: {m!r} is not one of {', '.join(METHODS)}")
        if self.pairs < 2:
            raise ValueError(f"pairs must be at least 2 (Spearman needs two), got {self.pairs}")
