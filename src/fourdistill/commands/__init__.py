"""The CLI: one module per subcommand, parsers and handlers; the only place where imports are deferred."""
