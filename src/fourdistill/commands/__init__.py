"""The `fourdistill` subcommands: parsers and handlers, each module exposing `register(subparsers)`."""
