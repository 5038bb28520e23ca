"""4D sources: one protocol (`Source`) for videos, D-NeRF folders, nerfstudio captures and the world.

`open_source(path)` picks the reader from what the path is. Importing this package is cheap,
and so are the readers it imports (dnerf, images, nerfstudio, video): PyAV and PIL load only
when a reader decodes, because every source is opened through this package, and the
fitted-field package (light itself, see fourdistill.field) imports it to register its kind.

Higher floors add kinds of their own through `register_source(kind, description, detect,
reader)`: a fitted 4D field (fourdistill.field) is a source, but this package must not import
the field package (the field imports sources, and the data flows one way). Registration is
triggered lazily: `detect_kind` / `open_source` first import the packages named in
`SOURCE_PLUGINS`, whose `__init__` registers their kinds (the field package registers
FieldSource). Importing by name at the first use, rather than at this package's import,
keeps `import fourdistill.sources` free of the field (and of torch), and still lets a caller
who never imported the field open a fitted field by its path; tests/test_sources.py checks
that every name in SOURCE_PLUGINS imports and registers, so a wrong name fails a test, not a
user. A registered kind's `detect(path)` must be cheap; its `reader()` returns the reader
class and is called only when `detect` matched, so the reader's heavy imports wait until then.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import Frame, FrameInfo, Source, SourceError, SourceSummary
from .dnerf import DNERF_SPLITS, DNeRFSource, split_files
from .images import IMAGE_SUFFIXES, image_files
from .nerfstudio import NerfstudioSource
from .video import VIDEO_SUFFIXES, FramesFolderSource, VideoSource

KNOWN_KINDS = (
    f"a video file ({', '.join(VIDEO_SUFFIXES)})",
    "a D-NeRF folder (transforms_train.json / transforms_val.json / transforms_test.json)",
    "a nerfstudio capture (a folder with transforms.json)",
    f"a folder of image frames ({', '.join(IMAGE_SUFFIXES)})",
    "world:SEED (a procedural world scene)",
)

# Packages whose import registers source kinds (see the module docstring).
SOURCE_PLUGINS = ("fourdistill.field",)


@dataclass(frozen=True)
class SourceKind:
    """A registered kind: detect(path) says whether a path is one; reader() returns its Source class."""

    kind: str
    description: str
    detect: Callable[[Path], bool]
    reader: Callable[[], type[Source]]


_REGISTERED: dict[str, SourceKind] = {}
_plugins_loaded = False


def register_source(kind: str, description: str, detect: Callable[[Path], bool], reader: Callable[[], type[Source]]) -> None:
    """Add a kind of source that detect_kind and open_source recognise (a kind registered again
    replaces the earlier entry). Registered kinds are tried before the built-in folder kinds."""
    _REGISTERED[kind] = SourceKind(kind, description, detect, reader)


def registered_kinds() -> list[SourceKind]:
    """The registered kinds, after importing SOURCE_PLUGINS."""
    global _plugins_loaded
    if not _plugins_loaded:
        for name in SOURCE_PLUGINS:
            importlib.import_module(name)
        _plugins_loaded = True
    return list(_REGISTERED.values())


def known_kinds() -> list[str]:
    """Descriptions of every kind of source open_source opens, built-in and registered."""
    return list(KNOWN_KINDS) + [k.description for k in registered_kinds()]


def _open_world(spec: str, options: dict) -> Source:
    from ..world import make_scene
    from .world import WorldSource

    text = spec.split(":", 1)[1]
    try:
        seed = int(text)
    except ValueError:
        raise SourceError(spec, f"the world seed must be an integer, got {text!r}") from None
    _check_options(WorldSource, spec, options)
    return WorldSource(make_scene(seed), **options)


def _check_options(cls, path, options: dict) -> None:
    """Options the reader does not take are an error naming the reader's own options."""
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"][1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SourceError(
            path, f"option(s) {', '.join(unknown)} do not apply to a {cls.kind} source (it takes: {', '.join(accepted) or 'none'})"
        )


def detect_kind(path) -> type[Source]:
    """The reader class for a file or folder; SourceError listing the known kinds otherwise."""
    path = Path(path)
    if not path.exists():
        raise SourceError(path, "no such file or folder")
    for registered in registered_kinds():
        if registered.detect(path):
            return registered.reader()
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return VideoSource
        if path.name == "transforms.json":
            return NerfstudioSource
    elif split_files(path):
        return DNeRFSource
    elif (path / "transforms.json").is_file():
        return NerfstudioSource
    elif image_files(path):
        return FramesFolderSource
    raise SourceError(path, "not a known 4D source; known kinds: " + "; ".join(known_kinds()))


def open_source(path, **options) -> Source:
    """Open a 4D source, choosing the reader from the path.

    path: a video file (by suffix); a folder with transforms_{train,val,test}.json (D-NeRF);
    a folder with transforms.json, or that file (nerfstudio); a folder of images (frames);
    or the string "world:SEED". options go to the reader (split, background, max_frames,
    stride, resolution, ...); one the reader does not take is an error.
    """
    if isinstance(path, str) and path.startswith("world:"):
        return _open_world(path, options)
    cls = detect_kind(path)
    _check_options(cls, path, options)
    return cls(path, **options)


__all__ = [
    "DNERF_SPLITS",
    "DNeRFSource",
    "Frame",
    "FrameInfo",
    "FramesFolderSource",
    "KNOWN_KINDS",
    "NerfstudioSource",
    "Source",
    "SOURCE_PLUGINS",
    "SourceError",
    "SourceKind",
    "SourceSummary",
    "VideoSource",
    "detect_kind",
    "known_kinds",
    "open_source",
    "register_source",
    "registered_kinds",
]
