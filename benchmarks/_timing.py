"""Timing shared by the benchmarks: variants alternated in one run, ratios with their spread.

On a shared machine the load changes from second to second, so two variants timed one after
the other can differ by the load alone. `alternate` runs the variants in turns (A, B, A, B, ...,
after a warm-up of each) and keeps every round's time; `print_ratio` forms the ratio within each
round, where both variants met about the same load, and prints its median, its interquartile
range and its min-max over the rounds, beside the median time of each variant. A goal is
claimed met (or not met) only when the whole interquartile range lies on one side of it;
otherwise a line says the spread is too wide to tell.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Seconds per round of each variant (per unit of work where units were given)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    unit: str = "call"

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.seconds.values()), default=0)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, num: str, den: str) -> list[float]:
        """Per-round ratio seconds[num] / seconds[den]."""
        return [a / b for a, b in zip(self.seconds[num], self.seconds[den])]

    def add_best(self, name: str, of: list[str]) -> None:
        """A derived variant: in each round, the fastest of `of` (e.g. the best of several
        methods for a ceiling)."""
        self.seconds[name] = [min(r) for r in zip(*(self.seconds[n] for n in of))]


def alternate(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    units: dict[str, float] | None = None,
    unit: str = "call",
    sync: Callable[[], None] | None = None,
) -> Timings:
    """Run every variant `warmup` times, then `rounds` rounds of one call of each in turn.

    A variant is timed with time.perf_counter around its call (with `sync()` before and after,
    e.g. torch.cuda.synchronize); a variant that times itself returns its seconds as a float,
    which is then used instead. `units[name]` divides a variant's seconds to give seconds per
    unit of work (points, rays, images), so variants of different sizes compare per unit;
    `unit` names what one call (or one unit) is, for the printed times.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    out = Timings({name: [] for name in variants}, unit)
    for _ in range(rounds):
        for name, fn in variants.items():
            sync()
            start = time.perf_counter()
            returned = fn()
            sync()
            elapsed = time.perf_counter() - start
            if isinstance(returned, float):
                elapsed = returned
            out.seconds[name].append(elapsed / (units or {}).get(name, 1.0))
    return out


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def format_seconds(s: float) -> str:
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {suffix}"
    return f"{s / 1e-12:.3g} ps"


def print_times(timings: Timings, names: list[str] | None = None, labels: dict[str, str] | None = None, indent: str = "  ") -> None:
    """One line per variant: median seconds per unit, its interquartile range and min-max."""
    labels = labels or {}
    names = names or list(timings.seconds)
    width = max(len(labels.get(n, n)) for n in names)
    for name in names:
        v = timings.seconds[name]
        q1, q3 = quartiles(v)
        print(
            f"{indent}{labels.get(name, name):<{width}}  median {format_seconds(statistics.median(v))}/{timings.unit}"
            f"  IQR {format_seconds(q1)}-{format_seconds(q3)}  min-max {format_seconds(min(v))}-{format_seconds(max(v))}"
        )


def print_ratio(
    timings: Timings,
    num: str,
    den: str,
    label: str | None = None,
    at_most: float | None = None,
    at_least: float | None = None,
    percent: bool = False,
    indent: str = "  ",
) -> list[float]:
    """Print the per-round ratio seconds[num] / seconds[den]: median, IQR, min-max, the median
    times of both, and, with a goal (`at_most` or `at_least`), whether it is met.

    To print a speed-up of B over A, pass num=A, den=B (A's time over B's)."""
    r = timings.ratio(num, den)
    q1, q3 = quartiles(r)
    med = statistics.median(r)

    def fmt(x: float) -> str:
        return f"{x:.0%}" if percent else f"{x:.2f}x"

    label = label or f"{num} / {den}"
    print(
        f"{indent}{label}: median {fmt(med)}, IQR {fmt(q1)}-{fmt(q3)}, min-max {fmt(min(r))}-{fmt(max(r))} over {len(r)} rounds"
        f" ({num} {format_seconds(timings.median(num))}, {den} {format_seconds(timings.median(den))} per {timings.unit})"
    )
    if at_most is None and at_least is None:
        return r
    goal = f"<= {fmt(at_most)}" if at_most is not None else f">= {fmt(at_least)}"
    if at_most is not None:
        met, missed = q3 <= at_most, q1 > at_most
    else:
        met, missed = q1 >= at_least, q3 < at_least
    if met:
        print(f"{indent}  goal {goal}: met (the whole IQR)")
    elif missed:
        print(f"{indent}  goal {goal}: NOT met (the whole IQR)")
    else:
        print(f"{indent}  goal {goal}: spread too wide to tell (IQR {fmt(q1)}-{fmt(q3)} straddles it); rerun with more --rounds or a quieter machine")
    return r


def add_rounds_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """--rounds N (alias --repeats): timed rounds after the warm-up."""
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=default,
                        help=f"timed rounds, each variant once per round, after a warm-up of each (default {default})")
