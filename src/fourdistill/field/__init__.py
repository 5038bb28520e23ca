"""The 4D field: hash-grid encodings (static 3D, dynamic 4D), MLPs, occupancy, rendering.

Importing this package is cheap (the `fourdistill` command registers its subcommands from
here); torch loads when a name below is first used, and the CPU kernel of the hash grid is
built on its first use. Importing it registers the fitted field as a kind of 4D source
(fourdistill.sources.register_source; FieldSource loads only when a path is a field).
"""

from pathlib import Path

__all__ = ["HashGridConfig", "HashGridEncoding"]


def __getattr__(name):
    if name in __all__:
        from . import hash_grid

        return getattr(hash_grid, name)
    raise AttributeError(name)


def _is_field(path: Path) -> bool:
    """A folder with field.json, or a run folder whose checkpoint/ has one (FieldSource then
    reports a field.json that is not a field checkpoint)."""
    from ..engine.checkpoint import clean_stale
    from .checkpoint import META_NAME

    path = Path(path)
    if not path.is_dir():
        return False
    clean_stale(path / "checkpoint")  # a write interrupted between its renames
    return (path / META_NAME).is_file() or (path / "checkpoint" / META_NAME).is_file()


def _field_source():
    from .source import FieldSource

    return FieldSource


def _register() -> None:
    from ..sources import register_source

    register_source("field", "a fitted 4D field (a reconstruct run folder or its checkpoint/)", _is_field, _field_source)


_register()
