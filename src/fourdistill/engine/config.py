"""One configuration mechanism for every trainer: typed dataclasses, a file, flags, one --resume.

A trainer's settings are one dataclass with defaults that run (nested dataclasses allowed).
A run's configuration is, in order of precedence:

    flags given on the command line  >  --config FILE (JSON, or YAML for .yaml / .yml)  >  defaults

`config_from_dict` checks a file's values against the dataclass's annotations (int, float,
str, bool, tuples, lists, dicts, `X | None`, Literal, nested dataclasses); an unknown key or
a value of the wrong type is a ConfigError (a ValueError) naming the file and the key.

`--resume` means one thing everywhere: continue the run in --out. `start_run` enforces it:
a fresh run refuses an --out that already holds a run; a resumed run compares the saved
configuration (OUT/config.json) with the new one and refuses any changed setting, naming it,
except those that may change between invocations (`MAY_CHANGE`: how long to train and how
often to save, validate and log).

`add_common_flags` gives every training subcommand the same --config, --out, --resume,
--seed, --steps and --threads. The command parsers import this module, so it stays light:
PyYAML and the JSON writer load when a file is read or written.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from .flags import nonnegative_int, positive_int, seed_int

RUN_CONFIG_NAME = "config.json"
MAY_CHANGE = ("steps", "save_every", "validate_every", "log_every", "checkpoint_every", "eval_every", "out")


class ConfigError(ValueError):
    """A configuration file or setting is wrong; the message names the file and the key."""


class RunFolderError(ValueError):
    """--out and --resume disagree: a fresh run into a folder holding one, or a changed setting."""


# ----------------------------------------------------------------------------- typed loading
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where: str, key: str):
    """`value` checked against the annotation `tp` (JSON lists become tuples where asked)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return config_from_dict(tp, value, where, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where, key)
            except ConfigError:
                pass
        raise bad
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise ConfigError(f"{where}: {key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad
    return value


def config_from_dict(cls, data: dict, where: str = "config", prefix: str = ""):
    """An instance of the dataclass `cls` from a (nested) dict, every value type-checked.

    where: the file (or "flags") named in errors; prefix: the dotted path of a nested config.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix + unknown[0]!r} (known: {', '.join(fields)})")
    values = {k: _coerce(v, hints[k], where, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def read_config_file(path) -> dict:
    """The mapping in a JSON or YAML (.yaml / .yml) file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable configuration file ({type(exc).__name__}: {exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write the file as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply to read") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise ConfigError(f"{path}: JSON nested too deeply to read") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def load_config(cls, path):
    """The dataclass `cls` from a JSON or YAML file (keys and value types checked)."""
    return config_from_dict(cls, read_config_file(path), str(path))


def config_to_dict(config) -> dict:
    """A config as JSON types (tuples become lists), the form saved in OUT/config.json.
    Fields the constructor does not take (init=False, derived in __post_init__) are left out."""

    def settable(obj):
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: settable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        if isinstance(obj, (list, tuple)):
            return [settable(v) for v in obj]
        if isinstance(obj, dict):
            return {k: settable(v) for k, v in obj.items()}
        return obj

    return json.loads(json.dumps(settable(config)))


def override(config, overrides: dict):
    """A copy of `config` with `overrides` applied; keys may be dotted into nested configs
    ("render.n_samples"); None values are skipped (a flag not given). Values are type-checked."""
    data = config_to_dict(config)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if last not in node:
            raise ConfigError(f"flags: unknown setting {key!r}")
        node[last] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(type(config), data, "flags")


# ----------------------------------------------------------------------------- command line
def add_common_flags(parser, defaults=None, *, out_required: bool = False) -> None:
    """--config, --out, --resume, --seed, --steps, --threads on a subparser.

    defaults: for the help texts, the config's default instance (its values are shown) or the
    config's class name (the help names the field: "default: ReconstructConfig.steps"). Every
    flag defaults to None ("the file's or the config's"), so a flag overrides --config FILE
    only when given.
    """

    def shown(name):
        if isinstance(defaults, str):
            return f" (default: {defaults}.{name})"
        value = getattr(defaults, name, None)
        return f" (default {value})" if value is not None else ""

    parser.add_argument("--config", metavar="FILE", default=None, help="settings from a JSON or YAML file; flags given override it")
    parser.add_argument("--out", default=None, required=out_required, help="run folder" + ("" if out_required else shown("out")))
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (same settings; --steps may grow)")
    parser.add_argument("--seed", type=seed_int, default=None, help="seed of everything random" + shown("seed"))
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps" + shown("steps"))
    parser.add_argument("--threads", type=nonnegative_int, default=None, help="torch CPU threads (default: torch's; 1 is fastest for tiny models on a shared CPU)")


def config_from_args(cls, args, overrides: dict | None = None):
    """`cls` from args.config (when given) or its defaults, then args.seed / args.steps and
    `overrides` (field or dotted key -> value; None: not given) applied on top."""
    config = load_config(cls, args.config) if getattr(args, "config", None) else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    common = {k: getattr(args, k, None) for k in ("seed", "steps", "out") if k in names}
    return override(config, {**common, **(overrides or {})})


# ----------------------------------------------------------------------------- the --resume rule
def holds_run(out) -> bool:
    """Whether `out` holds a run: its config.json or a checkpoint/ folder."""
    out = Path(out)
    return (out / RUN_CONFIG_NAME).is_file() or (out / "checkpoint").exists()


def config_changes(saved: dict, new: dict, may_change=MAY_CHANGE, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) for every setting that differs, outside `may_change`
    (top-level names). Both sides are compared as JSON types."""
    saved, new = json.loads(json.dumps(saved)), json.loads(json.dumps(new))
    changes = []
    for key in sorted(set(saved) | set(new), key=lambda k: (list(new).index(k) if k in new else len(new), k)):
        if not prefix and key in may_change:
            continue
        a, b = saved.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, (), f"{prefix}{key}.")
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


def check_resume(saved: dict, new: dict, where, may_change=MAY_CHANGE) -> None:
    """RunFolderError naming the first changed setting (see config_changes)."""
    changes = config_changes(saved, new, may_change)
    if changes:
        key, a, b = changes[0]
        more = f" (and {len(changes) - 1} more: {', '.join(c[0] for c in changes[1:4])})" if len(changes) > 1 else ""
        raise RunFolderError(
            f"{where}: cannot resume: {key} was {a!r}, now {b!r}{more}; the run's settings differ from this command's: "
            "resume with the same settings or choose another --out"
        )


def start_run(out, config, resume: bool, *, may_change=MAY_CHANGE, saved: dict | None = None, command: str | None = None) -> Path:
    """Apply the --resume rule to the run folder `out` and record the configuration.

    An --out that cannot be written is refused first (io.check_writable, OutputError).
    Fresh (resume False): RunFolderError when `out` already holds a run. Resumed: the saved
    configuration (OUT/config.json, else `saved`, e.g. read from an older checkpoint) must
    equal `config` outside `may_change`. Then OUT/config.json is (re)written with `config`
    and `command`. Returns `out` as a Path.
    """
    from ..io import check_writable, write_json

    out = Path(out)
    check_writable(out, "--out")
    path = out / RUN_CONFIG_NAME
    new = config_to_dict(config) if dataclasses.is_dataclass(config) else json.loads(json.dumps(config))
    if not resume:
        if holds_run(out):
            raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    else:
        if path.is_file():
            try:
                saved = json.loads(path.read_text())["config"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as exc:
                raise RunFolderError(f"{path}: damaged run configuration ({type(exc).__name__}: {exc})") from None
        if saved is not None:
            check_resume(saved, new, out, may_change)
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"config": new, "command": command})
    return out
