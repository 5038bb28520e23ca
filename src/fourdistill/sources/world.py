"""The procedural world as a 4D source: renders any camera at any time, exactly."""

from __future__ import annotations

import numpy as np

from ..cameras import Camera, OrbitRange, orbit_camera
from ..world import DEFAULT_ORBIT, check_train_seeds, make_scene, render_view, render_views
from .base import Frame, FrameInfo, Source


class WorldSource(Source):
    """A world scene seen through the `Source` protocol.

    Held frames (what `infos` lists, for `inspect` and for discrete use) are `n_views` orbit
    cameras at evenly spaced azimuths times `n_times` evenly spaced times; `render` answers any
    other camera and time.
    """

    kind = "world"
    renders_any_view = True

    def __init__(self, scene, resolution: int = 64, n_views: int = 8, n_times: int = 16, orbit: OrbitRange | None = None):
        self.scene = scene
        self.world_seed = int(scene.seed)
        self.name = f"world:{scene.seed}"
        self.caption = scene.caption
        self.orbit = orbit or DEFAULT_ORBIT
        self._size = int(resolution)
        self._grid = (int(n_views), int(n_times))
        self._infos: list[FrameInfo] | None = None

    def infos(self) -> list[FrameInfo]:
        """The held frames, built on first use (pair sampling from the world never needs them)."""
        if self._infos is None:
            n_views, n_times = self._grid
            el = float(np.mean(self.orbit.elevation_deg))
            r = float(np.mean(self.orbit.radius))
            cams = [
                orbit_camera(az, el, r, self.orbit.fov_x_deg, self._size, self._size, self.orbit.target)
                for az in np.linspace(-180.0, 180.0, n_views, endpoint=False)
            ]
            times = np.linspace(0.0, 1.0, n_times)
            self._infos = [
                FrameInfo(index=i * n_times + j, time01=float(t), camera=c) for i, c in enumerate(cams) for j, t in enumerate(times)
            ]
        return self._infos

    def frame(self, index: int) -> Frame:
        info = self.infos()[index]
        return self.render(info.camera, info.time01)

    def render(self, camera: Camera, time01: float) -> Frame:
        out = render_view(self.scene, camera, time01)
        return Frame(rgb=out["rgb"], time01=float(time01), camera=camera, mask=out["mask"], depth=out["depth"])

    def render_batch(self, cameras, times) -> dict[str, np.ndarray]:
        return render_views(self.scene, cameras, times)


class WorldScenes:
    """A lazy sequence of world sources, one per seed, built when indexed."""

    def __init__(self, seeds, resolution: int = 64, config=None, allow_eval: bool = False):
        self.seeds = list(seeds)
        if not allow_eval:
            check_train_seeds(self.seeds)
        self.resolution = resolution
        self.config = config

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> WorldSource:
        return WorldSource(make_scene(self.seeds[i], self.config), resolution=self.resolution)
