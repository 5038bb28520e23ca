"""World training data for the teachers: single images, K-view sets and T-frame clips.

Every teacher of the family learns from renders of training-seed world scenes (never
`EVAL_SEEDS`) with their captions, drawn in one of three shapes:

- ``"images"``: single renders at random `DEFAULT_ORBIT` cameras and uniform times (the image
  teacher, a Stable-Diffusion-layout stack);
- ``"views"``: K views of one scene at one time, azimuths 360/K degrees apart from a shared
  random offset, one elevation and one radius (the multi-view teacher; MVDream, Shi et al.
  2023, and 4D-fy, Bahmani et al. 2024, sample their 4-view batches this way);
- ``"clips"``: T frames of one camera over the scene's time, t_k = t0 + k / T with
  t0 ~ U(0, 1 / T) (the video teacher; 4D-fy's frame times).

`render_world_set` returns a dict of numpy arrays; the leading axis runs over samples
(scene x `views_per_scene`), the second, for views and clips, over the K views or T frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("images", "views", "clips")


@dataclass
class DataConfig:
    """Which training scenes, and how many samples of each. Seeds are drawn from the world's
    training range (never EVAL_SEEDS)."""

    first_seed: int = 0
    n_scenes: int = 2000
    views_per_scene: int = 4  # samples per scene: images, K-view sets or clips
    # inclusive range of objects per scene; None: the world's default (WorldConfig.n_objects)
    n_objects: tuple[int, int] | None = None

    def world(self):
        """The WorldConfig these scenes are drawn from (it checks the range)."""
        from ..world import WorldConfig

        return WorldConfig() if self.n_objects is None else WorldConfig(n_objects=tuple(self.n_objects))


def training_seeds(cfg: DataConfig) -> list[int]:
    """The scenes' seeds, first_seed .. first_seed + n_scenes - 1; refuses any held-out seed."""
    from ..world import check_train_seeds

    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.n_scenes))
    check_train_seeds(seeds)
    return seeds


def view_set_cameras(rng: np.random.Generator, n_views: int, resolution: int, orbit=None):
    """K cameras of one view set: azimuths offset + 360 k / K, one elevation and radius drawn
    from `orbit` (default DEFAULT_ORBIT). Returns (cameras, azimuths_deg (K,), elevation_deg)."""
    from ..cameras import orbit_camera, wrap_degrees
    from ..world import DEFAULT_ORBIT

    orbit = orbit or DEFAULT_ORBIT
    offset = rng.uniform(*orbit.azimuth_deg)
    elevation = rng.uniform(*orbit.elevation_deg)
    radius = rng.uniform(*orbit.radius)
    azimuths = np.array([wrap_degrees(offset + 360.0 * k / n_views) for k in range(n_views)])
    cams = [orbit_camera(float(a), elevation, radius, orbit.fov_x_deg, resolution, resolution, orbit.target) for a in azimuths]
    return cams, azimuths, float(elevation)


def clip_times(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """T frame times in [0, 1): t_k = t0 + k / T, t0 ~ U(0, 1 / T) (4D-fy's jittered start)."""
    t0 = rng.uniform(0.0, 1.0 / n_frames)
    return t0 + np.arange(n_frames) / n_frames


def _uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_world_set(
    cfg: DataConfig,
    resolution: int,
    seed: int,
    mode: str = "images",
    n_views: int = 4,
    n_frames: int = 8,
    progress: bool = True,
) -> dict:
    """Render the training set in one of MODES; N = n_scenes x views_per_scene samples.

    Every mode returns: images uint8, objects bool (the pixels that show an object), captions
    (S,) str, scene (N,) index into captions, seeds (S,), cameras float32 camera-to-world.
    - images: images (N, H, W, 3), objects (N, H, W), cameras (N, 4, 4), times (N,)
    - views:  images (N, K, H, W, 3), objects (N, K, H, W), cameras (N, K, 4, 4), times (N,),
      azimuth_deg (N, K), elevation_deg (N,)
    - clips:  images (N, T, H, W, 3), objects (N, T, H, W), cameras (N, 4, 4), times (N, T)
    """
    from tqdm import tqdm

    from ..world import DEFAULT_ORBIT, make_scene
    from ..world.render import object_mask, render_views

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if n_views < 1 or n_frames < 1:
        raise ValueError(f"n_views and n_frames must be >= 1, got {n_views} and {n_frames}")
    seeds = training_seeds(cfg)
    world = cfg.world()
    # the images mode keeps the stream the shipped stack's renders were drawn with
    rng = np.random.default_rng([seed, 0x7EAC] if mode == "images" else [seed, 0x7EAC, MODES.index(mode)])
    per = cfg.views_per_scene
    images, objects, cameras, times, scene_index, captions = [], [], [], [], [], []
    azimuths, elevations = [], []
    for k, s in enumerate(tqdm(seeds, desc=f"rendering training {mode}", disable=not progress, unit="scene")):
        scene = make_scene(s, world)
        if mode == "images":
            cams = [DEFAULT_ORBIT.sample(rng, resolution, resolution) for _ in range(per)]
            t = rng.uniform(0.0, 1.0, per)
            out = render_views(scene, cams, t)
            images.append(_uint8(out["rgb"]))
            objects.append(object_mask(scene, cams, t, out["depth"]))
            cameras.append(np.stack([c.c2w for c in cams]))
            times.append(t)
        else:
            for _ in range(per):
                if mode == "views":
                    cams, az, el = view_set_cameras(rng, n_views, resolution)
                    t = np.full(n_views, rng.uniform(0.0, 1.0))
                    azimuths.append(az)
                    elevations.append(el)
                    times.append(t[0])
                else:
                    cam = DEFAULT_ORBIT.sample(rng, resolution, resolution)
                    t = clip_times(rng, n_frames)
                    cams = [cam] * n_frames
                    times.append(t)
                out = render_views(scene, cams, t)
                images.append(_uint8(out["rgb"])[None])
                objects.append(object_mask(scene, cams, t, out["depth"])[None])
                cameras.append(np.stack([c.c2w for c in cams])[None] if mode == "views" else cams[0].c2w[None])
        scene_index += [k] * per
        captions.append(scene.caption)
    data = dict(
        images=np.concatenate(images),
        objects=np.concatenate(objects),
        cameras=np.concatenate(cameras).astype(np.float32),
        scene=np.asarray(scene_index, dtype=np.int64),
        captions=np.asarray(captions),
        seeds=np.asarray(seeds, dtype=np.int64),
    )
    if mode == "images":
        data["times"] = np.concatenate(times).astype(np.float32)
    else:
        data["times"] = np.asarray(times, dtype=np.float32)
    if mode == "views":
        data["azimuth_deg"] = np.asarray(azimuths, dtype=np.float32)
        data["elevation_deg"] = np.asarray(elevations, dtype=np.float32)
    return data
