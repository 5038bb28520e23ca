"""Writing files safely: atomic replace, images, image grids and videos (mp4, webm, gif).

Every writer goes through a temporary file in the destination folder followed by
`os.replace`, so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".avi")


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False):
    """Yield a temporary folder next to `path`; it becomes `path` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8."""
    return (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path, image: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Save (H, W, 3) float [0, 1] as PNG/JPEG; with `mask` (H, W) as RGBA PNG."""
    rgb = to_uint8(image)
    if mask is not None:
        rgb = np.concatenate([rgb, to_uint8(mask)[..., None]], axis=-1)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG" if Path(path).suffix.lower() == ".png" else None)


def image_grid(images, rows: int | None = None, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, H, W, 3) into one (R*H, C*W, 3) grid, row-major."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w, c = images.shape
    rows = rows or int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = images[i]
    return grid


def write_video(path, frames, fps: int = 24) -> Path:
    """Write frames (N, H, W, 3) float in [0, 1] to mp4 (H.264), webm (VP9), avi (MPEG-4) or gif."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: unknown video format {suffix!r}; use one of {', '.join(VIDEO_SUFFIXES)}")
    frames = to_uint8(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{path}: frames must have shape (N, H, W, 3) with N >= 1, got {frames.shape}")
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            pil = [Image.fromarray(f) for f in frames]
            pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:], duration=int(round(1000 / fps)), loop=0)
        else:
            codec = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}[suffix]
            h, w = frames.shape[1:3]
            # yuv420p needs even sizes: pad by edge replication
            ph, pw = h + h % 2, w + w % 2
            if (ph, pw) != (h, w):
                frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            with av.open(str(tmp), mode="w", format={".mp4": "mp4", ".webm": "webm", ".avi": "avi"}[suffix]) as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": "18", "preset": "medium"}
                for f in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return path
