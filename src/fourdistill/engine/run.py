"""What a command needs from the process it runs in: its command line, torch's threads, and
whether its output can be written at all.

Library code (trainers, model cards) imports these from here; the CLI only parses arguments.
`check_writable` (defined in fourdistill.io, which every writer uses) refuses an output that
cannot be written before the work starts.
"""

from __future__ import annotations

import shlex
import sys

import torch

from ..io import OutputError, check_writable  # noqa: F401  (re-exported: what a command checks first)


def invoked_command() -> str | None:
    """The command line as typed, for model cards and reports (None when not run as `fourdistill`)."""
    if not sys.argv or not sys.argv[0].endswith("fourdistill"):
        return None
    return "fourdistill " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads (the compiled hash-grid kernel's included) when a command's
    --threads asks for a number; None or 0 keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)

