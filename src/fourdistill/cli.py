"""The `fourdistill` command line.

Each subcommand lives next to the code it drives, in a module that exposes
`register(subparsers)`. Those modules import only argparse-level things at the top, so
`fourdistill --help` stays fast; the handlers import torch and friends when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that define subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "fourdistill.world.commands",
    "fourdistill.sources.commands",
    "fourdistill.field.commands",
    "fourdistill.evaluate.commands",
    "fourdistill.commands.reader",
    "fourdistill.teachers.commands",
    "fourdistill.distill",
    "fourdistill.generate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fourdistill",
        description=(
            "Distillation between 4D and 2D generative models. 4D -> 2D: teach a "
            "Stable-Diffusion-layout model time and view control from a 4D source. "
            "2D -> 4D: fit or generate a 4D hash-grid field. Every command runs on the "
            "embedded default (a procedural 4D world and tiny diffusion models) when no "
            "weights or data are given."
        ),
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fourdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors: one line, no traceback
        from .sources.base import SourceError

        if isinstance(exc, (SourceError, FileNotFoundError, ValueError)) and not getattr(args, "debug", False):
            print(f"fourdistill {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
