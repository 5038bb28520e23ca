"""The 4D field: hash-grid encodings (static 3D, dynamic 4D), MLPs, occupancy, rendering.

This package's own import stays light because importing it registers the fitted field as a
kind of 4D source (fourdistill.sources.register_source), which `open_source` does for every
path it opens: detecting a field folder reads file names only, FieldSource (and torch with
it) loads only when a path is a field, and the names below load on first use. The modules
of the package import torch at their top.
"""

from pathlib import Path

from ..engine.checkpoint import clean_stale
from ..sources import register_source

META_NAME = "field.json"  # the metadata file that marks a field checkpoint folder (field/checkpoint.py)

__all__ = ["HashGridConfig", "HashGridEncoding"]


def __getattr__(name):
    if name in __all__:
        from . import hash_grid

        return getattr(hash_grid, name)
    raise AttributeError(name)


def _is_field(path: Path) -> bool:
    """A folder with field.json, or a run folder whose checkpoint/ has one (FieldSource then
    reports a field.json that is not a field checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        return False
    clean_stale(path / "checkpoint")  # a write interrupted between its renames
    return (path / META_NAME).is_file() or (path / "checkpoint" / META_NAME).is_file()


def _field_source():
    from .source import FieldSource

    return FieldSource


def _register() -> None:
    register_source("field", "a fitted 4D field (a reconstruct run folder or its checkpoint/)", _is_field, _field_source)


_register()
