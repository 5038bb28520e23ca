"""The `fourdistill` command line.

Each subcommand is a module of `fourdistill.commands` that exposes `register(subparsers)`;
building the parser imports only those modules, so `fourdistill --help` stays fast, and a
handler imports the library when it runs. User errors print one line, no traceback, and exit
2: a missing file (FileNotFoundError) and every ValueError, which bad data (SourceError) and a
wrong setting (the engine's ConfigError and RunFolderError) are.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Modules that define subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "fourdistill.commands.world",
    "fourdistill.commands.inspect",
    "fourdistill.commands.reconstruct",
    "fourdistill.commands.judge",
    "fourdistill.commands.reader",
    "fourdistill.commands.evaluate",
    "fourdistill.commands.teachers",
    "fourdistill.commands.distill",
    "fourdistill.commands.generate",
    "fourdistill.commands.text_to_4d",
    "fourdistill.commands.app",
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
        if isinstance(exc, (FileNotFoundError, ValueError)) and not getattr(args, "debug", False):
            print(f"fourdistill {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
