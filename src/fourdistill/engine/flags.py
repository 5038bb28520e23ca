"""Argument types for numeric flags: a value is checked where it is parsed, and a bad one is
refused by argparse naming the flag ("argument --lr: must be a positive number, got '0'").

Each function is an argparse `type=`: it takes the flag's text and returns the value or
raises `argparse.ArgumentTypeError`. Non-finite floats (nan, inf) are refused by every float
type, so a NaN never reaches a camera or a sampler. Light on purpose: the parsers import it.
"""

from __future__ import annotations

import argparse
import math

# How many world scenes are held out for evaluation: len(fourdistill.world.EVAL_SEEDS), written
# here so that parsing stays free of the world's imports (tests check the two agree).
HELD_OUT_SCENES = 1000


def _number(text: str, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _typed(name: str, kind, check, what: str):
    def parse(text: str):
        value = _number(text, kind)
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = name  # argparse names the type in "invalid <name> value" messages
    return parse


positive_int = _typed("positive_int", int, lambda v: v >= 1, "a positive integer (1 or more)")
nonnegative_int = _typed("nonnegative_int", int, lambda v: v >= 0, "an integer >= 0")
seed_int = _typed("seed", int, lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)")
finite_float = _typed("finite_float", float, lambda v: True, "a finite number")
positive_float = _typed("positive_float", float, lambda v: v > 0.0, "a positive number")
nonnegative_float = _typed("nonnegative_float", float, lambda v: v >= 0.0, "a number >= 0")
probability = _typed("probability", float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
unit_interval_open_low = _typed("fraction", float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
elevation_deg = _typed("elevation", float, lambda v: -90.0 < v < 90.0, "an elevation change in degrees, strictly between -90 and 90")


def at_most(limit: int, what: str):
    """A positive integer no larger than `limit` (e.g. the number of held-out scenes)."""
    return _typed("positive_int", int, lambda v: 1 <= v <= limit, f"a positive integer of at most {limit} ({what})")


def at_least(low: int):
    """An integer no smaller than `low`."""
    return _typed("int", int, lambda v: v >= low, f"an integer >= {low}")


def check_settings(config, types: dict, where) -> None:
    """Check a trainer's merged settings (flags over --config FILE over defaults) with the
    same types as the flags, so a value written in a file is held to the flag's rule; a bad
    one is a ValueError naming `where` (the file) and the setting's dotted key."""
    for key, parse in types.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value is None:
            continue
        try:
            parse(repr(value) if isinstance(value, float) else str(value))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{where}: {key}: {exc}") from None
