"""Model cards: README.md generated from the run itself, written atomically.

A card says how the model was made and what it reached, from what the run recorded (its
command, configuration, steps, wall time and numbers), so a shipped folder explains itself.
Trainers add their own lines (`training`: more bullets under "Training") and sections
(`sections`: heading -> markdown); what a card says about a kind of model stays with it (the
mapper card's loading instructions live in mappers/checkpoint.py).

    # <title>
    <intro>
    ## Training
    - command: `...`
    - <training lines>
    - wall time: X min on <device> (<threads> torch threads; torch <version>)
    ## Results                 (the `numbers`, when given)
    ## <section>...            (the `sections`, in order)
    ## Configuration           (the config as JSON, when given)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io import atomic_path


def card_text(
    title: str,
    intro: str = "",
    *,
    command: str | None = None,
    default_command: str = "library call",
    training: list[str] = (),
    steps: int | None = None,
    wall_s: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    numbers: list[str] | dict = (),
    sections: dict[str, str] | None = None,
    config: dict | None = None,
) -> str:
    """The card's markdown. numbers: bullet lines, or name -> value (floats to 4 significant digits)."""
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro.strip(), ""]
    lines += ["## Training", "", f"- command: `{command or default_command}`"]
    lines += [f"- {line}" for line in training]
    if steps is not None and not any(f"{steps} steps" in line for line in training):
        lines.append(f"- steps: {steps}")
    if wall_s is not None:
        where = f" on {device}" if device else ""
        lines.append(f"- wall time: {wall_s / 60.0:.1f} min{where} ({threads if threads is not None else torch.get_num_threads()} torch threads; torch {torch.__version__})")
    if numbers:
        items = numbers.items() if isinstance(numbers, dict) else None
        lines += ["", "## Results", ""]
        if items is not None:
            lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in items]
        else:
            lines += [f"- {line}" for line in numbers]
    for heading, body in (sections or {}).items():
        lines += ["", f"## {heading}", "", body.strip()] if heading else ["", body.strip()]
    if config is not None:
        lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2), "```"]
    return "\n".join(lines) + "\n"


def write_card(folder, text: str) -> Path:
    """Write `text` to folder/README.md atomically; returns the path."""
    path = Path(folder) / "README.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path
