"""Writing files safely: atomic replace, images, image grids and videos (mp4, webm, gif).

Every writer goes through a temporary file in the destination folder followed by
`os.replace`, so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".avi")


class OutputError(ValueError):
    """An output path that cannot be written; the message names the path and the cause
    (`cause`: what the operating system said, e.g. "No space left on device")."""

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause


def check_writable(path, what: str = "--out", *, folder: bool = True) -> Path:
    """Refuse, before any work starts, an output that cannot be written; returns `path`.

    folder: `path` is a folder to write into (a run folder, a report folder), else a file to
    (re)place. The checks: an existing `path` of the wrong kind (a file where a folder is
    expected, a folder or a device where a file is); an existing ancestor that is a file; and
    a probe: a small temporary file is created, written, synced and removed in the nearest
    existing folder, so a read-only or full file system and a missing permission are found by
    what the operating system says, not by permission bits (which do not bind root).
    OutputError (a ValueError) names `what`, the path and the cause.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {path}: exists and is not a folder")
    elif path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise OutputError(f"{what} {path}: exists and is {kind}; name a file to write")
    probe_dir = path if folder else path.parent
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise OutputError(f"{what} {path}: cannot be created, {probe_dir} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fourdistill-write-check-", dir=probe_dir)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {probe_dir} ({exc.strerror or exc})") from None
    try:
        os.write(fd, b"fourdistill write check\n")
        os.fsync(fd)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {probe_dir} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
        os.remove(probe)
    return path


# What a failed write reports as the cause: the file system refusing, not a bug.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR, errno.EISDIR)


def _temp_prefix(path: Path) -> str:
    """Prefix of the temporary siblings of `path`; it carries the writer's process id, so a
    later write can tell a temporary left by a killed process from one still being written."""
    return f".{path.name}.tmp-{os.getpid()}-"


def clean_stale_temps(path) -> list[Path]:
    """Remove the temporary siblings of `path` that a killed writer left (their process is
    gone); returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for stale in path.parent.glob(f".{glob_escape(path.name)}.tmp-*-*"):
        pid_text = stale.name[len(path.name) + 6 :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()
        removed.append(stale)
    return removed


def glob_escape(name: str) -> str:
    """`name` with glob's special characters quoted."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_failed(path: Path, exc: OSError | OutputError) -> OutputError:
    cause = exc.cause if isinstance(exc, OutputError) else (exc.strerror or str(exc))
    return OutputError(f"{path}: cannot be written ({cause}); nothing was replaced", cause)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to `path`; move it into place only if the block succeeds.

    Temporaries that a killed writer left beside `path` are removed first. A write the file
    system refuses (full disk, read-only, no permission) raises OutputError naming `path`;
    `path` itself is then unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix if suffix is not None else path.suffix, dir=path.parent)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS or isinstance(exc, FileExistsError):
            raise _write_failed(path, exc) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False):
    """Yield a temporary folder next to `path`; it becomes `path` only if the block succeeds.

    What an interrupted earlier write left is cleaned first: temporaries of killed writers are
    removed, and a previous folder set aside (`.<name>.old`) is moved back when `path` is
    missing (interrupted between the two renames). An existing `path` without `overwrite` is a
    FileExistsError; a write the file system refuses is an OutputError naming `path`.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from None
        raise
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OutputError as exc:  # a file inside the folder: name the folder the user asked for
        raise _write_failed(path, exc) from None
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from None
        raise
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
