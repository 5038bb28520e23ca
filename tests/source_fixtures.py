"""Real 4D source files for the source tests: videos written with PyAV, D-NeRF and nerfstudio folders."""

from __future__ import annotations

import json
import math

import av
import numpy as np
from PIL import Image

from fourdistill.cameras import orbit_camera

# (suffix, container format, codec, pixel format) for each video kind the reader takes.
VIDEO_KINDS = (
    (".mp4", "mp4", "libx264", "yuv420p"),
    (".webm", "webm", "libvpx-vp9", "yuv420p"),
    (".avi", "avi", "mpeg4", "yuv420p"),
    (".mov", "mov", "libx264", "yuv420p"),
    (".mkv", "matroska", "libx264", "yuv420p"),
    (".gif", "gif", "gif", "rgb8"),
)
# Only the kinds this PyAV build can encode.
ENCODABLE_VIDEO_KINDS = tuple(k for k in VIDEO_KINDS if k[2] in av.codecs_available)


def indexed_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(n, H, W, 3) uint8 frames whose content encodes the frame index.

    Frame i: a white vertical bar whose left edge is at x = 4 i on a background whose red
    level steps with i. The levels are ones GIF's 3-3-2 bit colours hold exactly.
    """
    frames = np.zeros((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, ..., 0] = int(round(255 * (i % 8) / 7))
        frames[i, ..., 2] = 85
        frames[i, :, 4 * i : 4 * i + 6] = 255
    return frames


def write_video(path, frames: np.ndarray, fps: int = 12, faststart: bool = False) -> None:
    """Encode uint8 frames (N, H, W, 3) with PyAV, in the container the suffix names."""
    suffix = "." + str(path).rsplit(".", 1)[-1].lower()
    _, fmt, codec, pix_fmt = next(k for k in VIDEO_KINDS if k[0] == suffix)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "12"}
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if pix_fmt != "yuv420p":
                frame = frame.reformat(format=pix_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def rgba_image(seed: int, height: int, width: int) -> np.ndarray:
    """(H, W, 4) uint8: random colours, alpha with fully opaque, fully clear and partial pixels."""
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[: height // 3, :, 3] = 0
    rgba[height // 3 : 2 * height // 3, :, 3] = 255
    return rgba


def write_dnerf(
    folder,
    size=(8, 6),
    splits=None,
    camera_angle_x: float = math.radians(40.0),
    with_extension: dict | None = None,
) -> dict:
    """Write a D-NeRF folder of RGBA PNGs with known poses.

    splits: {split: a list of times, or a frame count for frames without "time" keys}.
    Returns {split: [(c2w, time or None, rgba uint8)]} for checking what the reader gives.
    """
    splits = splits if splits is not None else {"train": [0.0, 0.25, 1.0], "val": 3, "test": [0.5, 0.75]}
    with_extension = with_extension or {}
    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for s, (split, times) in enumerate(splits.items()):
        n, times = (times, None) if isinstance(times, int) else (len(times), times)
        (folder / split).mkdir(exist_ok=True)
        frames, truth[split] = [], []
        for i in range(n):
            cam = orbit_camera(30.0 * i + 100.0 * s, 10.0 + 5.0 * i, 4.0, 40.0, width, height)
            rgba = rgba_image(100 * s + i, height, width)
            Image.fromarray(rgba, "RGBA").save(folder / split / f"r_{i:03d}.png")
            entry = {"file_path": f"./{split}/r_{i:03d}" + (".png" if with_extension.get(split) else ""),
                     "rotation": 0.1, "transform_matrix": cam.c2w.tolist()}
            if times is not None:
                entry["time"] = times[i]
            frames.append(entry)
            truth[split].append((cam.c2w, None if times is None else times[i], rgba))
        (folder / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": camera_angle_x, "frames": frames}))
    return truth


def write_nerfstudio(folder, n: int = 3, size=(10, 8), per_frame: bool = False, extra: dict | None = None) -> list[dict]:
    """Write a nerfstudio capture of RGB PNGs; intrinsics shared, or per frame when `per_frame`.

    Returns the frame entries as written.
    """
    width, height = size
    (folder / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(rgb, "RGB").save(folder / "images" / f"frame_{i + 1:05d}.png")
        entry = {"file_path": f"images/frame_{i + 1:05d}.png", "transform_matrix": orbit_camera(40.0 * i, 20.0, 3.0).c2w.tolist()}
        if per_frame:
            entry.update(fl_x=9.0 + i, fl_y=9.5 + i, cx=4.5 + 0.1 * i, cy=3.5, w=width, h=height)
        frames.append(entry)
    meta = {"camera_model": "OPENCV", "frames": frames}
    if not per_frame:
        meta.update(fl_x=11.0, fl_y=12.0, cx=5.25, cy=3.75, w=width, h=height)
    meta.update(extra or {})
    (folder / "transforms.json").write_text(json.dumps(meta))
    return frames


def folder_listing(folder) -> list[tuple[str, int]]:
    """Every path under `folder` with its size, to check a reader wrote nothing."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))
