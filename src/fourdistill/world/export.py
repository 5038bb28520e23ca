"""Export world scenes: D-NeRF folders (Pumarola et al. 2021) and videos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cameras import Camera, OrbitRange, orbit_camera
from ..io import atomic_dir, save_image, write_json, write_video
from .render import render_views
from .scene import DEFAULT_ORBIT, Scene


def orbit_path(
    n_frames: int,
    resolution: int = 128,
    azimuth_start_deg: float = 30.0,
    azimuth_span_deg: float = 0.0,
    elevation_deg: float = 25.0,
    radius: float | None = None,
    orbit: OrbitRange = DEFAULT_ORBIT,
) -> list[Camera]:
    """`n_frames` cameras sweeping `azimuth_span_deg` (0: a fixed camera) at one elevation."""
    radius = float(np.mean(orbit.radius)) if radius is None else radius
    azimuths = azimuth_start_deg + np.linspace(0.0, azimuth_span_deg, n_frames)
    return [orbit_camera(a, elevation_deg, radius, orbit.fov_x_deg, resolution, resolution, orbit.target) for a in azimuths]


def export_video(
    scene: Scene,
    path,
    n_frames: int = 48,
    fps: int = 24,
    resolution: int = 128,
    azimuth_span_deg: float = 0.0,
    cameras: list[Camera] | None = None,
) -> Path:
    """Render t = 0..1 (and optionally an orbit) to mp4 / webm / avi / gif, chosen by suffix."""
    cameras = cameras or orbit_path(n_frames, resolution, azimuth_span_deg=azimuth_span_deg)
    if len(cameras) != n_frames:
        raise ValueError(f"got {len(cameras)} cameras for {n_frames} frames")
    times = np.linspace(0.0, 1.0, n_frames)
    frames = np.concatenate(
        [render_views(scene, cameras[i : i + 16], times[i : i + 16])["rgb"] for i in range(0, n_frames, 16)]
    )
    return write_video(path, frames, fps=fps)


def _split_views(rng: np.random.Generator, n: int, resolution: int, orbit: OrbitRange, sorted_times: bool):
    times = np.linspace(0.0, 1.0, n) if sorted_times else np.sort(rng.uniform(0.0, 1.0, n))
    cams = [orbit.sample(rng, resolution, resolution) for _ in range(n)]
    return cams, times


def export_dnerf(
    scene: Scene,
    folder,
    resolution: int = 64,
    n_train: int = 50,
    n_val: int = 10,
    n_test: int = 20,
    seed: int = 0,
    orbit: OrbitRange = DEFAULT_ORBIT,
    overwrite: bool = False,
) -> Path:
    """Write a D-NeRF folder: transforms_{train,val,test}.json and RGBA PNGs.

    Like D-NeRF's monocular captures, every frame has its own camera and time: training
    times are evenly spaced over [0, 1], validation and test times random, cameras drawn from
    `orbit`. Alpha is the world's mask (objects and ground; the sky is transparent). The
    folder appears only when complete.
    """
    rng = np.random.default_rng([int(seed), int(scene.seed), 0xD7])
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            if n <= 0:
                continue
            cams, times = _split_views(rng, n, resolution, orbit, sorted_times=split == "train")
            frames = []
            (tmp / split).mkdir()
            for start in range(0, n, 32):
                out = render_views(scene, cams[start : start + 32], times[start : start + 32])
                for k in range(len(out["rgb"])):
                    i = start + k
                    save_image(tmp / split / f"r_{i:03d}.png", out["rgb"][k], out["mask"][k])
                    frames.append(
                        {"file_path": f"./{split}/r_{i:03d}", "time": float(times[i]), "transform_matrix": cams[i].c2w.tolist()}
                    )
            write_json(
                tmp / f"transforms_{split}.json",
                {"camera_angle_x": math.radians(orbit.fov_x_deg), "frames": frames},
            )
        write_json(tmp / "scene.json", {"seed": scene.seed, "caption": scene.caption, "resolution": resolution})
    return Path(folder)
