"""Recipes: a stack made by a chain of training runs, as one file and one command.

A recipe is a YAML or JSON file with one top-level key, `runs`: run name -> TrainConfig
settings (the keys of a --config file, nested as there). The runs execute in the file's order,
each into OUT/<name>/ (its own run folder, train.py's layout), and the recipe's stack is the
last run's, OUT/<last>/stack. `init_from` and `vae_from` may name an earlier run of the same
recipe as `run:<name>`, meaning OUT/<name>/stack:

    runs:
      vae:                      # a fresh stack: VAE phase, then (here) no U-Net steps
        vae_steps: 700
        unet_steps: 0
      decoder:
        init_from: run:vae      # that stack, its decoder trained on
        decoder_steps: 3000
        unet_steps: 0

    fourdistill teachers train --config recipe.yaml --out runs/stack           # every run
    fourdistill teachers train --config recipe.yaml --out runs/stack --resume  # after a stop

Without --resume a recipe refuses an OUT whose first run folder already holds a run. With it,
a finished run (its train_summary.json records exactly the run's settings) is skipped, an
interrupted one resumes from its checkpoint (bit for bit), and a run not yet begun starts. A
finished run whose `unet_steps` or `cooldown_steps` grew in the file is resumed and extended.

A file without `runs` is a plain TrainConfig file: one run into OUT itself. Errors (an unknown
key, a bad value, `run:` naming no earlier run) are ConfigErrors naming the file and the key,
raised before anything trains.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ...engine.config import ConfigError, config_changes, config_from_dict, holds_run, read_config_file
from .train import SUMMARY_NAME, TrainConfig, resolve_config, train

RUN_REFERENCE = "run:"
REFERENCE_FIELDS = ("init_from", "vae_from")


def is_recipe(data: dict) -> bool:
    """Whether a configuration file's mapping is a recipe (has `runs`)."""
    return "runs" in data


def load_recipe(path) -> list[tuple[str, TrainConfig]]:
    """The runs of a recipe file, in order: (name, TrainConfig), with `run:<name>` references
    left as they are (checked: each names an earlier run)."""
    data = read_config_file(path)
    where = str(path)
    extra = [k for k in data if k != "runs"]
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} next to 'runs' (a recipe holds only runs: name -> settings)")
    runs = data["runs"]
    if not isinstance(runs, dict) or not runs:
        raise ConfigError(f"{where}: runs: expected a mapping of run names to settings, got {runs!r}")
    out: list[tuple[str, TrainConfig]] = []
    for name, settings in runs.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{where}: runs: {name!r} is not a run name (a folder name: no '/', not starting with '.')")
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: runs.{name}: expected a mapping of settings, got {type(settings).__name__}")
        earlier = [n for n, _ in out]
        for key in REFERENCE_FIELDS:
            value = settings.get(key)
            if isinstance(value, str) and value.startswith(RUN_REFERENCE) and value[len(RUN_REFERENCE):] not in earlier:
                raise ConfigError(
                    f"{where}: runs.{name}.{key}: {value!r} names no earlier run of this recipe (runs before it: {', '.join(earlier) or 'none'})"
                )
        out.append((name, config_from_dict(TrainConfig, settings, where, prefix=f"runs.{name}.")))
    return out


def resolve_references(cfg: TrainConfig, out) -> TrainConfig:
    """`cfg` with each `run:<name>` of init_from / vae_from replaced by OUT/<name>/stack."""
    changes = {}
    for key in REFERENCE_FIELDS:
        value = getattr(cfg, key)
        if isinstance(value, str) and value.startswith(RUN_REFERENCE):
            changes[key] = str(Path(out) / value[len(RUN_REFERENCE):] / "stack")
    return dataclasses.replace(cfg, **changes) if changes else cfg


def is_finished(folder, cfg: TrainConfig) -> bool:
    """Whether the run in `folder` finished with exactly the (resolved) settings of `cfg`."""
    path = Path(folder) / SUMMARY_NAME
    if not path.is_file() or not (Path(folder) / "stack" / "model_index.json").is_file():
        return False
    return not config_changes(json.loads(path.read_text())["config"], cfg.to_dict(), may_change=())


def run_recipe(
    path,
    out,
    resume: bool = False,
    progress: bool = True,
    log=print,
    sample_grid=None,
    command: str | None = None,
    stop_at: tuple[str, int] | None = None,
) -> Path | None:
    """Execute the recipe file `path` into `out` (see the module docstring); returns the last
    run's stack folder. stop_at (run name, U-Net step): stop there as an interruption would
    and return None (resume to finish)."""
    runs = load_recipe(path)
    out = Path(out)
    stack = None
    for name, cfg in runs:
        folder = out / name
        cfg = resolve_references(cfg, out)
        if resume and holds_run(folder) and is_finished(folder, resolve_config(cfg)):
            log(f"{name}: finished, skipped")
            stack = folder / "stack"
            continue
        log(f"{name}: training into {folder}")
        stop = stop_at[1] if stop_at is not None and stop_at[0] == name else None
        stack = train(folder, cfg, resume=resume and holds_run(folder), progress=progress, log=log, sample_grid=sample_grid, command=command, stop_at=stop)
        if stack is None:
            return None
    return stack
