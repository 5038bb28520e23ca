"""Videos and folders of frames: time only, one unknown camera.

Frame i of the N held frames has time i / (N - 1) (docs/method.md, 1.1: times normalised to
[0, 1] over the item's duration); the camera is None. Videos are decoded with PyAV when the
source opens, so a truncated or corrupt file fails there, naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import Frame, FrameInfo, Source, SourceError
from .images import ImageListSource, image_files, image_size, time_problems

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".avi", ".mov", ".mkv")

# Our choice: a clip whose frames all stay within this mean absolute difference of the
# first frame (in [0, 1] units) is reported as showing no motion.
STILL_CLIP_MEAN_DIFF = 1.0 / 255.0


def _one_line(exc: BaseException) -> str:
    """An FFmpeg error as one line, without its "[Errno N]" prefix."""
    return re.sub(r"^\[Errno -?\d+\]\s*", "", " ".join(str(exc).split())) or type(exc).__name__


def _check_subsampling(max_frames: int | None, stride: int) -> None:
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 2:
        raise ValueError(f"max_frames must be >= 2 (a 4D source needs two times), got {max_frames}")


def _held_times(n: int) -> list[float]:
    return [i / (n - 1) for i in range(n)]


def decode_video(path: Path, max_frames: int | None = None, stride: int = 1) -> tuple[np.ndarray, float | None]:
    """Decode every `stride`-th frame of the first video stream, at most `max_frames` of them.

    Returns frames (N, H, W, 3) uint8 RGB and the stream's average frame rate (or None).
    Raises SourceError when the file cannot be opened, a packet fails to decode, the frame
    size changes, or the file ends before what its header declares (a truncated file).
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(path, f"not a readable video: corrupt, truncated or an unknown format ({_one_line(exc)})") from None
    with container:
        if not container.streams.video:
            raise SourceError(path, "holds no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        kept: list[np.ndarray] = []
        decoded, last_end_s, stopped_early = 0, None, False
        try:
            for frame in container.decode(stream):
                if decoded % stride == 0:
                    rgb = frame.to_ndarray(format="rgb24")
                    if kept and rgb.shape != kept[0].shape:
                        raise SourceError(
                            path, f"frame {decoded} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 is {kept[0].shape[1]}x{kept[0].shape[0]}"
                        )
                    kept.append(rgb)
                decoded += 1
                if frame.time is not None:
                    step = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else (1.0 / fps if fps else 0.0)
                    last_end_s = frame.time + step
                if max_frames is not None and len(kept) >= max_frames:
                    stopped_early = True
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(path, f"corrupt or truncated video: decoding failed after {decoded} frames ({_one_line(exc)})") from None
        if not stopped_early:
            _check_complete(path, container, stream, decoded, last_end_s, fps)
    if len(kept) < 2:
        held = f"{len(kept)} frame" + ("" if len(kept) == 1 else "s")
        hint = f" (of {decoded} decoded, stride {stride})" if stride > 1 else ""
        raise SourceError(path, f"a video needs at least 2 frames, this one gives {held}{hint}")
    return np.stack(kept), fps


def _check_complete(path: Path, container, stream, decoded: int, last_end_s: float | None, fps: float | None) -> None:
    """Raise SourceError when the decoded frames fall short of what the file declares."""
    # Containers that count their frames (mp4, mov, avi, gif): all of them must decode.
    if stream.frames and decoded < stream.frames:
        raise SourceError(path, f"truncated video: the header declares {stream.frames} frames, only {decoded} decode")
    # Containers that state a duration (matroska/webm): the frames must reach its end.
    if stream.duration is not None and stream.time_base is not None:
        declared_s = float(stream.duration * stream.time_base)
    elif len(container.streams) == 1 and container.duration is not None and "matroska" in container.format.name:
        declared_s = container.duration / 1_000_000  # AV_TIME_BASE units
    else:
        declared_s = None
    if declared_s is not None and last_end_s is not None and fps:
        if last_end_s < declared_s - 0.5 / fps:  # more than half a frame missing
            raise SourceError(path, f"truncated video: frames stop at {last_end_s:.3f} s of a declared {declared_s:.3f} s")
    # GIF: a complete data stream ends with the trailer byte 0x3B (GIF89a specification).
    if container.format.name == "gif":
        with open(path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\x3b":
                raise SourceError(path, "truncated GIF: the file does not end with the GIF trailer")


class VideoSource(Source):
    """A video file (mp4, webm, gif, avi, mov, mkv), decoded with PyAV when opened.

    max_frames: keep at most this many frames (from the start). stride: keep every k-th
    frame. Frames are held as (N, H, W, 3) uint8; `frame(i)` gives float32 RGB in [0, 1].
    """

    kind = "video"

    def __init__(self, path, max_frames: int | None = None, stride: int = 1):
        _check_subsampling(max_frames, stride)
        path = Path(path)
        if not path.is_file():
            raise SourceError(path, "no such video file")
        self.path = path
        self.name = path.name
        self.frames_uint8, self.fps = decode_video(path, max_frames, int(stride))
        self.stride = int(stride)
        n = len(self.frames_uint8)
        self._infos = [FrameInfo(index=i, time01=t, camera=None, file=str(path)) for i, t in enumerate(_held_times(n))]

    def infos(self) -> list[FrameInfo]:
        return self._infos

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.frames_uint8.shape[2]), int(self.frames_uint8.shape[1])

    def frame(self, index: int) -> Frame:
        n = len(self._infos)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: frame {index} out of range (the video holds {n})")
        index %= n
        rgb = self.frames_uint8[index].astype(np.float32) / 255.0
        return Frame(rgb=rgb, time01=self._infos[index].time01, camera=None)

    def problems(self) -> list[str]:
        out = time_problems([i.time01 for i in self._infos])
        first = self.frames_uint8[0].astype(np.float32)
        diffs = [float(np.abs(f.astype(np.float32) - first).mean()) / 255.0 for f in self.frames_uint8[1:]]
        if max(diffs) < STILL_CLIP_MEAN_DIFF:
            out.append("no visible motion: every frame matches the first within 1/255 on average")
        return out


class FramesFolderSource(ImageListSource):
    """A folder of image frames (png, jpg, ...) in natural name order: frame_2 before frame_10.

    max_frames / stride subsample as for videos. RGBA frames are composited over
    `background` and their alpha is the mask. All frames must share one size.
    """

    kind = "frames"

    def __init__(self, folder, max_frames: int | None = None, stride: int = 1, background=(1.0, 1.0, 1.0), cache_size: int = 64):
        super().__init__(background, cache_size)
        _check_subsampling(max_frames, stride)
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(folder, "no such folder")
        files = image_files(folder)[:: int(stride)]
        if max_frames is not None:
            files = files[: int(max_frames)]
        if len(files) < 2:
            raise SourceError(folder, f"a folder of frames needs at least 2 images, this one gives {len(files)}")
        self.folder = folder
        self.name = folder.name
        size = image_size(files[0])
        for f in files[1:]:
            wh = image_size(f)
            if wh != size:
                raise SourceError(f, f"frame is {wh[0]}x{wh[1]} but {files[0].name} is {size[0]}x{size[1]}: all frames must share one size")
        infos = [FrameInfo(index=i, time01=t, camera=None, file=str(f)) for i, (f, t) in enumerate(zip(files, _held_times(len(files))))]
        self._set_frames(infos, size)

    def problems(self) -> list[str]:
        return time_problems([i.time01 for i in self._infos])
