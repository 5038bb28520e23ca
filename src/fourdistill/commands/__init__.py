"""The CLI: one module per subcommand, its parser and its handler; the only place where imports
are deferred, so `fourdistill --help` stays fast.

Each module exposes `register(subparsers)`, which adds its parser(s) and sets `handler` on
them; `fourdistill.cli` calls every `register` to build the parser, then runs the handler the
arguments chose. The library modules import what they use at their top (torch, diffusers,
PIL, PyAV); a handler imports the library inside the function, when the command runs.

Parsers import nothing that imports torch, and copy no default out of a config. The rule for
defaults, the same in every module:

- A flag that sets a field of a trainer's config dataclass defaults to None: not given, the
  value comes from --config FILE, else from the dataclass (engine.config.config_from_args).
  Its help shows the default read from the dataclass when the dataclass lives in a torch-free
  module (`ControlEvalConfig` in evaluate/config.py; the sampler defaults in diffusion/), and
  otherwise names the field it sets ("default: DistillConfig.lr"), because reading the value
  would import the trainer and torch with it.
- A flag that is not a config field (a handler's own option, such as `world show --times`)
  has its default in the parser, written once there.
"""
