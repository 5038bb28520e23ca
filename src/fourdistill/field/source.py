"""A fitted 4D field as a 4D source: any camera at any time, rendered on demand.

This closes the loop of the project: a reconstruction (or, later, a text-to-4D result) feeds
pair sampling and distillation like any other source, the "4D-to-2D distillation of
spatiotemporal implicit representations". The held frames (`infos`) are a default set of
`n_views` orbit cameras at evenly spaced azimuths times `n_times` evenly spaced times, as for
the world; `render` answers any other camera and time; cameras are drawn inside `orbit`, the
range the training cameras covered.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..cameras import Camera, OrbitRange, orbit_camera
from ..sources.base import Frame, FrameInfo, Source
from .checkpoint import checkpoint_folder, load_checkpoint, orbit_from_dict
from .render import OccupancyGrid, RenderConfig, camera_rays, render_rays


class FieldSource(Source):
    """A field checkpoint (a run folder or its checkpoint/ folder) as a continuous source.

    resolution: size of the held frames (default: the training images' width). Frames carry
    rgb (H, W, 3), mask = rendered opacity (H, W) and depth (H, W), inf where opacity < 0.5.
    """

    kind = "field"
    renders_any_view = True

    def __init__(self, checkpoint, resolution: int | None = None, n_views: int = 8, n_times: int = 16, device: str = "cpu"):
        field, grid, meta = load_checkpoint(checkpoint, device)
        orbit = orbit_from_dict(meta["orbit"]) if meta.get("orbit") else OrbitRange()
        size = resolution or int((meta.get("resolution") or [64])[0])
        folder = checkpoint_folder(checkpoint)
        name = f"field:{folder.parent.name if folder.name == 'checkpoint' else folder.name}"
        self._setup(field, grid, meta["render_config"], orbit, size, n_views, n_times, name, meta.get("caption"))
        self.step = meta.get("step")

    @classmethod
    def from_field(
        cls,
        field,
        grid: OccupancyGrid | None = None,
        render: RenderConfig | None = None,
        orbit: OrbitRange | None = None,
        resolution: int = 64,
        n_views: int = 8,
        n_times: int = 16,
        name: str = "field",
        caption: str | None = None,
    ) -> "FieldSource":
        """A source over a field already in memory."""
        source = cls.__new__(cls)
        source._setup(field, grid, render or RenderConfig(), orbit or OrbitRange(), resolution, n_views, n_times, name, caption)
        source.step = None
        return source

    def _setup(self, field, grid, render, orbit, resolution, n_views, n_times, name, caption) -> None:
        if int(resolution) < 1:
            raise ValueError(f"FieldSource resolution must be positive, got {resolution}")
        if n_views < 1 or n_times < 1:
            raise ValueError("FieldSource needs n_views >= 1 and n_times >= 1")
        self.field = field.eval()
        self.grid = grid
        self.render_config = render
        self.orbit = orbit
        self.name = name
        self.caption = caption
        self._size = int(resolution)
        el = float(np.mean(orbit.elevation_deg))
        r = float(np.mean(orbit.radius))
        lo, hi = orbit.azimuth_deg
        full_circle = hi - lo >= 360.0 - 1e-6
        azimuths = np.linspace(lo, hi, n_views, endpoint=not full_circle) if n_views > 1 else np.array([0.5 * (lo + hi)])
        cams = [orbit_camera(az, el, r, orbit.fov_x_deg, self._size, self._size, orbit.target) for az in azimuths]
        times = np.linspace(0.0, 1.0, n_times) if n_times > 1 else np.zeros(1)
        self._infos = [
            FrameInfo(index=i * n_times + j, time01=float(t), camera=c) for i, c in enumerate(cams) for j, t in enumerate(times)
        ]

    def infos(self) -> list[FrameInfo]:
        return self._infos

    def frame(self, index: int) -> Frame:
        info = self._infos[index]
        return self.render(info.camera, info.time01)

    def render(self, camera: Camera, time01: float) -> Frame:
        out = self.render_batch([camera], [time01])
        return Frame(rgb=out["rgb"][0], time01=float(time01), camera=camera, mask=out["mask"][0], depth=out["depth"][0])

    @torch.no_grad()
    def render_batch(self, cameras, times) -> dict[str, np.ndarray]:
        """Render cameras (all one size) at times: rgb (B, H, W, 3), mask (B, H, W), depth (B, H, W)
        numpy float32; rays of all views go through the renderer together, in chunks."""
        cameras, times = list(cameras), [float(t) for t in times]
        if len(cameras) != len(times):
            raise ValueError(f"got {len(cameras)} cameras but {len(times)} times")
        if not cameras:
            raise ValueError("render_batch needs at least one camera")
        w, h = cameras[0].width, cameras[0].height
        if any((c.width, c.height) != (w, h) for c in cameras):
            raise ValueError("all cameras in one render_batch call must share an image size")
        bad = [t for t in times if not (math.isfinite(t) and 0.0 <= t <= 1.0)]
        if bad:
            raise ValueError(f"times must lie in [0, 1], got {bad[0]}")
        device = next(self.field.parameters()).device
        rays = [camera_rays(c, device) for c in cameras]
        o = torch.cat([r[0] for r in rays])
        d = torch.cat([r[1] for r in rays])
        t = torch.tensor(times, dtype=torch.float32, device=device).repeat_interleave(h * w)
        chunk = self.render_config.chunk
        parts = [render_rays(self.field, o[i : i + chunk], d[i : i + chunk], t[i : i + chunk], self.render_config, self.grid)
                 for i in range(0, o.shape[0], chunk)]
        b = len(cameras)
        rgb = torch.cat([p["rgb"] for p in parts]).clamp(0, 1).reshape(b, h, w, 3)
        opacity = torch.cat([p["opacity"] for p in parts]).clamp(0, 1).reshape(b, h, w)
        depth = torch.cat([p["depth"] for p in parts]).reshape(b, h, w)
        depth = torch.where(opacity >= 0.5, depth, torch.full_like(depth, math.inf))
        return {"rgb": rgb.cpu().numpy(), "mask": opacity.cpu().numpy(), "depth": depth.cpu().numpy()}
