"""4D sources: one protocol (`Source`) for videos, D-NeRF folders, nerfstudio captures and the world.

`open_source(path)` picks the reader from what the path is. Importing this package is cheap:
the readers import PyAV and PIL only when they decode.
"""

from __future__ import annotations

import inspect
from pathlib import Path

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
    "a fitted 4D field (a reconstruct run folder or its checkpoint/)",
)


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
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return VideoSource
        if path.name == "transforms.json":
            return NerfstudioSource
    elif (path / "field.json").is_file() or (path / "checkpoint" / "field.json").is_file():
        from ..field.source import FieldSource  # a fitted 4D field (fourdistill reconstruct)

        return FieldSource
    elif split_files(path):
        return DNeRFSource
    elif (path / "transforms.json").is_file():
        return NerfstudioSource
    elif image_files(path):
        return FramesFolderSource
    raise SourceError(path, "not a known 4D source; known kinds: " + "; ".join(KNOWN_KINDS))


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
    "SourceError",
    "SourceSummary",
    "VideoSource",
    "detect_kind",
    "open_source",
]
