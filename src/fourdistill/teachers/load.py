"""`load_teacher(kind, model)`: one entry point for every teacher the project learns from.

    load_teacher("image", "embedded" | folder | hub id)        StableDiffusionPipeline + IP-Adapter
    load_teacher("multiview", folder | MVDream .pt | hub id)   multiview.load.MultiViewTeacher
    load_teacher("video", adapter or Zeroscope folder | hub id) video.load.VideoTeacher

`model` None is the embedded teacher of that kind (src/fourdistill/assets/<kind>). Keyword
arguments go to the kind's loader (`base=` names the stack a multi-view or video teacher
takes its VAE, text encoder and tokenizer from).
"""

from __future__ import annotations

from pathlib import Path

TEACHER_KINDS = ("image", "multiview", "video")
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def embedded_teacher(kind: str) -> Path:
    """The shipped folder of a teacher kind (a clear error when this installation has none)."""
    folder = ASSETS / ("stack" if kind == "image" else kind)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no embedded {kind} teacher in this installation "
                         f"(train one with `fourdistill teachers train --config configs/teachers/{kind}.yaml`)")
    return folder


def load_teacher(kind: str, model=None, **kwargs):
    """The teacher of `kind` (TEACHER_KINDS) from `model` (None: the embedded one)."""
    if kind == "image":
        from .image.load import load_stack

        return load_stack(model, **kwargs)
    if kind == "multiview":
        from .multiview.load import load_multiview_teacher

        return load_multiview_teacher(model if model is not None else embedded_teacher(kind), **kwargs)
    if kind == "video":
        from .video.load import load_video_teacher

        return load_video_teacher(model if model is not None else embedded_teacher(kind), **kwargs)
    raise ValueError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")
