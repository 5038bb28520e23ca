"""Blender-style `transforms*.json` files (D-NeRF and nerfstudio): reading and checking fields.

Both formats hold a "frames" list; each frame names an image (`file_path`) and its
camera-to-world `transform_matrix` (4x4, OpenGL/Blender axes, as D-NeRF: Pumarola et al. 2021).
Intrinsics come from shared top-level keys or per-frame keys, the per-frame ones winning.
Every check raises `SourceError` naming the JSON file and the field, e.g.
`frames[3].transform_matrix`. Beyond the types: a pose must be rigid (an orthonormal,
right-handed rotation within `RIGID_TOLERANCE`, bottom row 0 0 0 1), an image must lie inside
the dataset folder, and a file may be listed once per JSON file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .base import SourceError
from .images import IMAGE_SUFFIXES

# Largest entry of |R^T R - I| and of |det R - 1| a camera-to-world rotation may have. Poses
# written as JSON floats are rigid to about 1e-6; a scaled, sheared or singular matrix is off
# by far more, and would give rays that are not the camera's.
RIGID_TOLERANCE = 1e-3


def read_json(path: Path) -> dict:
    """The top-level JSON object of `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(path, "file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"unreadable ({' '.join(str(exc).split())})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise SourceError(path, "JSON nested too deeply to read (a damaged or hostile file)") from None
    if not isinstance(meta, dict):
        raise SourceError(path, f"must hold a JSON object at the top level, found {type(meta).__name__}")
    return meta


def frame_list(meta: dict, path: Path) -> list[dict]:
    """meta["frames"], checked to be a non-empty list of objects."""
    if "frames" not in meta:
        raise SourceError(path, "no 'frames' list", "frames")
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise SourceError(path, f"must be a list of frames, found {type(frames).__name__}", "frames")
    if not frames:
        raise SourceError(path, "is empty: the file lists no frames", "frames")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise SourceError(path, f"must be an object, found {type(frame).__name__}", f"frames[{i}]")
    return frames


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def transform_matrix(frame: dict, path: Path, i: int) -> np.ndarray:
    """(4, 4) float64 camera-to-world of frames[i]: 4 rows of 4 finite numbers, bottom row 0 0 0 1."""
    field_name = f"frames[{i}].transform_matrix"
    if "transform_matrix" not in frame:
        raise SourceError(path, "missing", field_name)
    rows = frame["transform_matrix"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise SourceError(path, "must be a 4x4 list of lists of numbers", field_name)
    shape = f"{len(rows)}x{'/'.join(sorted({str(len(r)) for r in rows})) or 0}"
    if len(rows) != 4 or any(len(r) != 4 for r in rows):
        raise SourceError(path, f"must be 4x4, got {shape}", field_name)
    if not all(_is_number(v) for r in rows for v in r):
        raise SourceError(path, "must hold only numbers", field_name)
    c2w = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(c2w)):
        raise SourceError(path, "has non-finite entries (NaN or infinity)", field_name)
    if not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise SourceError(path, f"bottom row must be [0, 0, 0, 1], got {c2w[3].tolist()}", field_name)
    rot = c2w[:3, :3]
    off = float(np.abs(rot.T @ rot - np.eye(3)).max())
    det = float(np.linalg.det(rot))
    if off > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        problem = "is singular" if abs(det) < 1e-6 else ("is a reflection" if det < 0 else "is scaled or sheared")
        raise SourceError(
            path,
            f"is not a rigid camera pose: its rotation {problem} (|R^T R - I| = {off:.3g}, det R = {det:.3g}; "
            f"a pose needs an orthonormal rotation within {RIGID_TOLERANCE:g})",
            field_name,
        )
    return c2w


def frame_time(value, path: Path, field_name: str) -> float:
    """A time in [0, 1]: a finite number (not a bool or a string)."""
    if not _is_number(value):
        raise SourceError(path, f"time must be a number in [0, 1], got {value!r}", field_name)
    t = float(value)
    if not math.isfinite(t) or t < 0.0 or t > 1.0:
        raise SourceError(path, f"time {value!r} is outside [0, 1]", field_name)
    return t


def resolve_image(base: Path, file_path, path: Path, field_name: str) -> Path:
    """The image file a frame's `file_path` names, relative to `base` unless absolute.

    A path without an image suffix gets one: ".png" first, as D-NeRF writes them
    (file_path + ".png", as D-NeRF), then the other image suffixes. The path
    must stay inside `base` (checked on the normalised path, so "../" cannot leave it; a
    symbolic link placed inside the folder is the folder owner's choice and is followed).
    """
    if not isinstance(file_path, str) or not file_path.strip():
        raise SourceError(path, f"must be a non-empty string, got {file_path!r}", field_name)
    image = Path(file_path)
    image = image if image.is_absolute() else Path(base) / image
    root = os.path.normpath(os.path.abspath(base))
    if os.path.commonpath([root, os.path.normpath(os.path.abspath(image))]) != root:
        raise SourceError(path, f"{file_path!r} leaves the dataset folder {base}: images must lie inside it", field_name)
    if image.suffix.lower() in IMAGE_SUFFIXES:
        candidates = [image]
    else:
        candidates = [image.with_name(image.name + s) for s in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SourceError(candidates[0], f"image file is missing (listed in {Path(path).name})", field_name)


def check_listed_once(images: list[Path], path: Path) -> None:
    """SourceError naming both fields when one image file is listed by two frames of `path`."""
    seen: dict[str, int] = {}
    for i, image in enumerate(images):
        key = os.path.normcase(os.path.normpath(os.path.abspath(image)))
        if key in seen:
            raise SourceError(
                path, f"{Path(image).name} is listed twice (also frames[{seen[key]}].file_path): each frame needs its own image", f"frames[{i}].file_path"
            )
        seen[key] = i


def lookup(frame: dict, meta: dict, key: str, i: int):
    """(value, field name) of `key`, per-frame first, then shared; (None, None) when absent."""
    if key in frame:
        return frame[key], f"frames[{i}].{key}"
    if key in meta:
        return meta[key], key
    return None, None


def number(value, path: Path, field_name: str, positive: bool = False) -> float:
    if not _is_number(value) or not math.isfinite(float(value)):
        raise SourceError(path, f"must be a finite number, got {value!r}", field_name)
    if positive and float(value) <= 0.0:
        raise SourceError(path, f"must be positive, got {value!r}", field_name)
    return float(value)


def _focal_from_angle(angle, size: int, path: Path, field_name: str) -> float:
    angle = number(angle, path, field_name, positive=True)
    if angle >= math.pi:
        raise SourceError(path, f"field of view must be below pi radians, got {angle!r}", field_name)
    return 0.5 * size / math.tan(0.5 * angle)  # D-NeRF (Pumarola et al. 2021): focal = 0.5 W / tan(0.5 camera_angle_x)


def pinhole_intrinsics(
    frame: dict, meta: dict, size: tuple[int, int], path: Path, i: int, focal_key: str = "camera_angle_x"
) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels for frames[i] of an image `size` = (width, height).

    fx from fl_x, else camera_angle_x; fy from fl_y, else camera_angle_y, else fx; the
    principal point defaults to the image centre. With neither focal key, the error names
    `focal_key` (the one the format normally carries).
    """
    width, height = size
    value, name = lookup(frame, meta, "fl_x", i)
    if value is not None:
        fx = number(value, path, name, positive=True)
    else:
        value, name = lookup(frame, meta, "camera_angle_x", i)
        if value is None:
            raise SourceError(path, "no focal length: give camera_angle_x (horizontal field of view, radians) or fl_x (pixels)", focal_key)
        fx = _focal_from_angle(value, width, path, name)
    value, name = lookup(frame, meta, "fl_y", i)
    if value is not None:
        fy = number(value, path, name, positive=True)
    else:
        value, name = lookup(frame, meta, "camera_angle_y", i)
        fy = fx if value is None else _focal_from_angle(value, height, path, name)
    value, name = lookup(frame, meta, "cx", i)
    cx = width / 2.0 if value is None else number(value, path, name)
    value, name = lookup(frame, meta, "cy", i)
    cy = height / 2.0 if value is None else number(value, path, name)
    return fx, fy, cx, cy
