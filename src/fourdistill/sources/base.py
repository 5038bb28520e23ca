"""One protocol for every kind of 4D data.

A source holds images of one subject at (camera, time) samples. Discrete sources (a video, a
D-NeRF folder, a multi-view capture) hold a fixed list of frames; continuous sources (the
procedural world, a fitted 4D field) additionally render any camera at any time.

Conventions (docs/method.md, 1.1 and 3): times are normalised to [0, 1] over the item's duration;
cameras are camera-to-world 4x4 in OpenGL/Blender axes with pixel intrinsics (`Camera`);
images are float32 RGB in [0, 1], shape (H, W, 3); masks float32 in [0, 1], shape (H, W).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..cameras import Camera, OrbitRange


class SourceError(ValueError):
    """Bad 4D data. The message names the file and, where there is one, the field."""

    def __init__(self, path, problem: str, field_name: str | None = None):
        self.path = str(path)
        self.field_name = field_name
        self.problem = problem
        where = f"{self.path}" + (f" [{field_name}]" if field_name else "")
        super().__init__(f"{where}: {problem}")


@dataclass
class Frame:
    """One image of a source.

    rgb: (H, W, 3) float32 in [0, 1]. mask: (H, W) float32 in [0, 1] or None when unknown.
    depth: (H, W) float32 distance along the ray (inf where empty) or None.
    camera: None for sources whose camera is unknown (a video).
    """

    rgb: np.ndarray
    time01: float
    camera: Camera | None
    mask: np.ndarray | None = None
    depth: np.ndarray | None = None


@dataclass(frozen=True)
class FrameInfo:
    """What a source holds at one index, without decoding the image."""

    index: int
    time01: float
    camera: Camera | None
    file: str | None = None


@dataclass
class SourceSummary:
    kind: str
    name: str
    frames: int
    time_range: tuple[float, float]
    distinct_times: int
    cameras: str
    resolution: tuple[int, int]
    renders_any_view: bool
    caption: str | None = None
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        t0, t1 = self.time_range
        out = [
            f"kind:        {self.kind}",
            f"name:        {self.name}",
            f"frames:      {self.frames}",
            f"time range:  {t0:.4f} .. {t1:.4f} ({self.distinct_times} distinct times)",
            f"cameras:     {self.cameras}",
            f"resolution:  {self.resolution[0]}x{self.resolution[1]}",
            f"any view:    {'yes (renders any camera and time)' if self.renders_any_view else 'no (held frames only)'}",
        ]
        if self.caption:
            out.append(f"caption:     {self.caption}")
        out.append("problems:    " + ("none" if not self.problems else ""))
        out += [f"  - {p}" for p in self.problems]
        return out


class Source(ABC):
    """A 4D source. Subclasses set `kind` and implement `infos` and `frame`.

    Continuous sources (the world, a fitted 4D field) set `renders_any_view = True`, give an
    `orbit` (where cameras make sense) and implement `render` (and `render_batch` where
    batching is faster); pair sampling then draws cameras and times freely instead of from
    the held frames.
    """

    kind: ClassVar[str] = "source"
    renders_any_view: ClassVar[bool] = False

    name: str = ""
    caption: str | None = None
    orbit: OrbitRange | None = None
    # The procedural world scene the data shows, where known (a world source, a D-NeRF export
    # of one, whose scene.json names it): what keeps held-out scenes out of training.
    world_seed: int | None = None

    @abstractmethod
    def infos(self) -> list[FrameInfo]:
        """The held frames, in order."""

    @abstractmethod
    def frame(self, index: int) -> Frame:
        """Decode held frame `index`."""

    def render(self, camera: Camera, time01: float) -> Frame:
        """Image at any camera and time; only for sources with `renders_any_view`."""
        raise NotImplementedError(f"a {self.kind} source holds fixed frames and cannot render a new camera or time")

    def __len__(self) -> int:
        return len(self.infos())

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height) of the held frames."""
        infos = self.infos()
        if infos and infos[0].camera is not None:
            return infos[0].camera.width, infos[0].camera.height
        f = self.frame(0)
        return f.rgb.shape[1], f.rgb.shape[0]

    def problems(self) -> list[str]:
        """Things worth knowing that do not stop the source from being used."""
        return []

    def summary(self) -> SourceSummary:
        infos = self.infos()
        times = np.array([i.time01 for i in infos], dtype=np.float64) if infos else np.zeros(1)
        cams = [i.camera for i in infos]
        if all(c is None for c in cams):
            cam_text = "unknown (one fixed camera)"
        else:
            poses = np.stack([c.c2w for c in cams if c is not None])
            distinct = len(np.unique(np.round(poses.reshape(len(poses), -1), 6), axis=0))
            c0 = next(c for c in cams if c is not None)
            cam_text = f"{distinct} distinct pose(s), fov_x {c0.fov_x_deg:.1f} deg"
        return SourceSummary(
            kind=self.kind,
            name=self.name,
            frames=len(infos),
            time_range=(float(times.min()), float(times.max())),
            distinct_times=int(len(np.unique(np.round(times, 6)))),
            cameras=cam_text,
            resolution=self.resolution,
            renders_any_view=self.renders_any_view,
            caption=self.caption,
            problems=self.problems(),
        )
