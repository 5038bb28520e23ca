"""The world's reader: camera, time and motion read back from pixels.

PSNR against the true target cannot tell a model that turned the camera by 80 degrees
instead of 90 from one that drew a sharp copy of its reference. Camera-control work measures
control by reading the pose back from generated frames (CameraCtrl, He et al. 2024;
MotionCtrl, Wang et al. 2024; 4DiM, Watson et al. 2024, with structure from motion). The
world has exact ground truth, so the reader is trained on renders instead and reports
control error in the units that were asked for: degrees and normalised time.

One small CNN encoder (64 x 64 RGB -> an 8 x 8 grid of features) feeds three heads:

- pose (one image): the camera's azimuth (as sin / cos, so the full circle), elevation and
  radius about the world's origin, in the world frame. The ground's tiles are tinted by world
  quadrant, so azimuth is readable over the full circle.
- pair (reference, other image of one scene): the relative azimuth and elevation are the
  differences of the two pose reads; the time displacement d = t_other - t_ref comes from a
  pair head made antisymmetric, G(ref, other) - G(other, ref). A copy of the reference
  therefore reads d = 0 and a relative camera of 0 exactly (slope 0 for copying), and
  swapping the images flips the signs.
  The world makes |d| readable on every moving scene but the sign of d only where a motion
  is not symmetric in time: spins and slides run either way, a reversed grow is a shrink, so
  only bounces (damped hops) and orbits (always counter-clockwise) tell forward from
  backward. The pair head therefore reads |d| (trained with a sign-blind loss) and, apart,
  the probability that d > 0 (confident only where it can be read).
- clip (8 frames of one camera, in playing order): each object's motion as the clip shows it
  (`MOTIONS`; a clip played backwards shows a growing object shrinking, and is labelled so)
  and the clip's direction in time (forward or reversed). Objects are addressed per shape
  slot, as the judge reads shapes: a world scene never repeats a shape, so the shape names
  an object; a colour slot would add nothing and multiply the classes by six. Each slot reads
  "absent" or one motion, bound to where the object is as the judge binds colour and shape
  (a per-cell shape score plus a per-cell motion score, best cell wins).

Inputs: torch tensors of float images in [0, 1], (B, 3, H, W) for images and (B, T, 3, H, W)
for clips. Square images of another side are resized to `image_size` (antialiased bilinear;
the field of view, and so what the reader reads, does not change); non-square images, other
channel counts, integer dtypes, values outside [0, 1] and clips shorter than `clip_frames` are
refused with the reason. Longer clips are subsampled to `clip_frames` evenly spaced frames.

Training uses renders of training seeds only (never `EVAL_SEEDS`): per scene `cameras`
cameras x `clip_frames` times (one set of times for all cameras), so same-camera pairs (time
pairs), same-time pairs (view pairs), joint pairs and clips all come from one render.
Augmentations change only brightness, blur and noise, never what the reader reads (no flips,
no shifts, no rotations). `heldout_reader_score` scores a reader on renders of evaluation
seeds at `DEFAULT_ORBIT` cameras. `train_reader` runs on the training engine
(fourdistill.engine) as the judge does; configs/reader.yaml is the shipped reader's run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import OrbitRange, orbit_camera
from ..world import DEFAULT_ORBIT, EVAL_SEEDS, MOTIONS, SHAPES, TRAIN_SEEDS, check_train_seeds, render_views
from .judge import random_blur
from .model_folder import CHECKPOINT_DIR, CONFIG_NAME, ModelFolder, training_info

SHIPPED_READER = Path(__file__).resolve().parent.parent / "assets" / "reader"
WEIGHTS_NAME = "reader.safetensors"
FORMAT = "fourdistill-reader"
READER_FOLDER = ModelFolder(WEIGHTS_NAME, FORMAT)
ABSENT = 0  # motion label 0: the shape is not in the scene; 1 + m: MOTIONS[m]
UNSCORED = -1
# Motions whose playing order shows the direction of time: a bounce's hops shrink, an orbit
# always turns counter-clockwise. The others look the same played either way (a spin or a
# slide runs either way in the world, a reversed grow is a shrink).
DIRECTED_MOTIONS = ("bounce", "orbit")
# A clip played backwards: what each motion looks like.
REVERSED_MOTION = {"grow": "shrink", "shrink": "grow"}

# Training cameras: the judge's range (elevation 5..50, radius 2.8..4.4), wider than
# DEFAULT_ORBIT on both sides, so views a little off the default are read too. Our choice.
TRAIN_ORBIT = OrbitRange(
    azimuth_deg=(-180.0, 180.0), elevation_deg=(5.0, 50.0), radius=(2.8, 4.4), fov_x_deg=DEFAULT_ORBIT.fov_x_deg
)


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ReaderConfig:
    """What the reader reads and how big it is; saved next to its weights.

    image_size: the side the reader works at. clip_frames: frames a clip head reads.
    stem_width, widths: encoder channels (stride-2 stem, then stride-2 stages); the grid is
    image_size / 2^(1 + len(widths)) (64 -> 8). pose_width: hidden units of the pose head.
    pair_width: channels of the pair head. clip_width: channels of the clip head.
    elevation_deg, radius: (centre, half-range) that normalise the pose targets (training only).
    """

    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = MOTIONS
    image_size: int = 64
    clip_frames: int = 8
    stem_width: int = 16
    widths: tuple[int, ...] = (32, 64)
    pose_width: int = 96
    pair_width: int = 48
    clip_width: int = 64
    elevation_deg: tuple[float, float] = (27.5, 22.5)
    radius: tuple[float, float] = (3.6, 0.8)

    def __post_init__(self):
        for name in ("shapes", "motions", "widths", "elevation_deg", "radius"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        for name, known, values in (("shapes", SHAPES, self.shapes), ("motions", MOTIONS, self.motions)):
            bad = [v for v in values if v not in known]
            if bad or not values or len(set(values)) != len(values):
                raise ValueError(f"ReaderConfig.{name}: unknown, repeated or empty {bad or list(values)}; the world has {list(known)}")
        if not self.widths or self.image_size < 16 or self.image_size % 2 ** (1 + len(self.widths)):
            raise ValueError(f"ReaderConfig: image_size must be >= 16 and divisible by 2^(1 + len(widths)), got {self.image_size}, {self.widths}")
        if any(w < 1 for w in (self.stem_width, self.pose_width, self.pair_width, self.clip_width, *self.widths)):
            raise ValueError("ReaderConfig: all widths must be positive")
        if self.clip_frames < 2:
            raise ValueError(f"ReaderConfig.clip_frames must be >= 2, got {self.clip_frames}")
        if len(self.elevation_deg) != 2 or len(self.radius) != 2 or self.elevation_deg[1] <= 0 or self.radius[1] <= 0:
            raise ValueError("ReaderConfig.elevation_deg and radius: (centre, positive half-range)")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (1 + len(self.widths))


def _conv(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU()]


class Reader(nn.Module):
    """The encoder and the three heads; read with `read_pose`, `read_pair` and `read_clip`.

    Raw outputs (for training): `encode` (N, 3, S, S) -> (N, C, g, g); `pose_outputs`
    -> (N, 4): sin and cos of azimuth, normalised elevation and radius; `pair_outputs`
    (fa, fb) -> (N, 2): the time reading m (|m| is |d|) and the logit of d > 0, both
    antisymmetric in (fa, fb); `clip_outputs` (B, T, C, g, g) -> motion logits
    (B, n_shapes, 1 + n_motions) (absent, then each motion) and the forward logit (B,).
    """

    def __init__(self, config: ReaderConfig | None = None):
        super().__init__()
        self.config = c = config or ReaderConfig()
        layers = _conv(3, c.stem_width, stride=2)
        for c_in, c_out in zip((c.stem_width, *c.widths[:-1]), c.widths):
            layers += _conv(c_in, c_out, stride=2) + _conv(c_out, c_out)
        self.encoder = nn.Sequential(*layers)
        width, g = c.widths[-1], c.grid
        self.pose = nn.Sequential(*_conv(width, 16, kernel=1), nn.Flatten(), nn.Linear(16 * g * g, c.pose_width), nn.SiLU(), nn.Linear(c.pose_width, 4))
        self.pair = nn.Sequential(
            *_conv(2 * width, c.pair_width), *_conv(c.pair_width, c.pair_width, stride=2), nn.Flatten(),
            nn.Linear(c.pair_width * ((g + 1) // 2) ** 2, 64), nn.SiLU(), nn.Linear(64, 2),
        )
        self.clip_reduce = nn.Sequential(*_conv(width, 24, kernel=1))
        self.clip = nn.Sequential(*_conv(24 * c.clip_frames, c.clip_width), *_conv(c.clip_width, c.clip_width))
        self.shape_scores = nn.Conv2d(c.clip_width, len(c.shapes), 1)
        self.motion_scores = nn.Conv2d(c.clip_width, len(c.motions), 1)
        self.direction = nn.Linear(c.clip_width, 1)
        nn.init.constant_(self.shape_scores.bias, -3.0)  # start from "mostly absent", as the judge

    # raw outputs
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images * 2.0 - 1.0)

    def pose_outputs(self, features: torch.Tensor) -> torch.Tensor:
        return self.pose(features)

    def pair_outputs(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        both = self.pair(torch.cat([torch.cat([fa, fb], dim=1), torch.cat([fb, fa], dim=1)]))
        forward, backward = both.chunk(2)
        return forward - backward

    def clip_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, ch, h, w = features.shape
        reduced = self.clip_reduce(features.reshape(b * t, ch, h, w)).reshape(b, -1, h, w)  # frames in order along channels
        f = self.clip(reduced)
        cells = self.shape_scores(f)[:, :, None] + self.motion_scores(f)[:, None]  # (B, S, M, h, w)
        motions = cells.flatten(3).amax(dim=3)
        logits = torch.cat([motions.new_zeros(b, motions.shape[1], 1), motions], dim=2)
        return logits, self.direction(f.mean(dim=(2, 3)))[:, 0]

    # input checks
    def prepare(self, images: torch.Tensor, what: str = "images") -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, 3, S, S) on the reader's device (see the module doc)."""
        x = check_images(images, what)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.float().clamp(0.0, 1.0).to(self._device)

    def prepare_clip(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W), T >= clip_frames -> (B, clip_frames, 3, S, S); longer clips keep
        frames round(linspace(0, T - 1, clip_frames))."""
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"clips must be a torch tensor (B, T, 3, H, W) of floats in [0, 1], got {type(clips).__name__}")
        if clips.ndim != 5:
            raise ValueError(f"clips must be (B, T, 3, H, W), got shape {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        need = self.config.clip_frames
        if t < need:
            raise ValueError(f"the reader needs clips of at least {need} frames, got {t}")
        if t > need:
            clips = clips[:, np.round(np.linspace(0, t - 1, need)).astype(np.int64)]
        x = self.prepare(clips.reshape(b * need, *clips.shape[2:]), "clip frames")
        return x.reshape(b, need, *x.shape[1:])

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # readings
    @torch.no_grad()
    def _features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return torch.cat([self.encode(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def _eval(self):
        was = self.training
        self.eval()
        return was

    @torch.no_grad()
    def read_pose(self, images) -> dict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> {"azimuth_deg" in (-180, 180], "elevation_deg", "radius"}, each (B,)."""
        was = self._eval()
        out = self.pose_from_outputs(self.pose_outputs(self._features(self.prepare(images))))
        self.train(was)
        return {k: v.cpu() for k, v in out.items()}

    def pose_from_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 4) pose outputs -> degrees and world units."""
        c = self.config
        return {
            "azimuth_deg": torch.rad2deg(torch.atan2(raw[:, 0], raw[:, 1])),
            "elevation_deg": c.elevation_deg[0] + c.elevation_deg[1] * raw[:, 2],
            "radius": c.radius[0] + c.radius[1] * raw[:, 3],
        }

    @torch.no_grad()
    def read_pair(self, reference, other) -> dict[str, torch.Tensor]:
        """Pairs of one scene, (B, 3, H, W) each -> (B,) readings of `other` relative to `reference`:

        relative_azimuth_deg (wrapped to (-180, 180]), relative_elevation_deg; abs_time_delta
        (|d|, d = t_other - t_ref in scene time [0, 1]); p_forward, the probability that d > 0
        (near 0.5 where the scene does not show the sign); time_delta, |d| with the sign of
        p_forward - 0.5 (0 when unsure at exactly 0.5).
        """
        x, y = self.prepare(reference, "reference"), self.prepare(other, "other")
        if len(x) != len(y):
            raise ValueError(f"read_pair needs as many reference as other images, got {len(x)} and {len(y)}")
        was = self._eval()
        fx, fy = self._features(x), self._features(y)
        px, py = (self.pose_from_outputs(self.pose_outputs(f)) for f in (fx, fy))
        raw = torch.cat([self.pair_outputs(fx[i : i + 256], fy[i : i + 256]) for i in range(0, len(fx), 256)])
        self.train(was)
        out = pair_from_outputs(px, py, raw)
        return {k: v.cpu() for k, v in out.items()}

    @torch.no_grad()
    def read_clip(self, clips) -> dict:
        """Clips (B, T, 3, H, W) -> {"motion_labels": (B, n_shapes) int64 (0 absent, 1 + m:
        motions[m]), "motions": [{shape: motion}] per clip (shapes read as present),
        "p_forward": (B,) probability that the clip plays forward in time}."""
        x = self.prepare_clip(clips)
        b, t = x.shape[:2]
        was = self._eval()
        f = self._features(x.flatten(0, 1))
        logits, forward = self.clip_outputs(f.reshape(b, t, *f.shape[1:]))
        self.train(was)
        labels = logits.argmax(dim=-1).cpu()
        names = [{s: self.config.motions[int(v) - 1] for s, v in zip(self.config.shapes, row) if int(v) > ABSENT} for row in labels]
        return {"motion_labels": labels, "motions": names, "p_forward": torch.sigmoid(forward).cpu()}


def pair_from_outputs(pose_ref: dict, pose_other: dict, raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pose reads of both images and the pair outputs (N, 2) -> the `read_pair` readings."""
    d_abs = raw[:, 0].abs()
    p_forward = torch.sigmoid(raw[:, 1])
    return {
        "relative_azimuth_deg": wrap_deg(pose_other["azimuth_deg"] - pose_ref["azimuth_deg"]),
        "relative_elevation_deg": pose_other["elevation_deg"] - pose_ref["elevation_deg"],
        "abs_time_delta": d_abs,
        "p_forward": p_forward,
        "time_delta": d_abs * torch.sign(p_forward - 0.5),
    }


def wrap_deg(angle):
    """Wrap degrees to [-180, 180) (tensor or array)."""
    return (angle + 180.0) % 360.0 - 180.0


def check_images(images, what: str = "images") -> torch.Tensor:
    """Refuse what the reader cannot read, with the reason: (B, 3, H, W) float tensors in [0, 1], square."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor (B, 3, H, W) of floats in [0, 1], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{what} must be (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"{what}: the reader reads RGB images (B, 3, H, W), got {images.shape[1]} channels")
    if not images.is_floating_point():
        raise ValueError(f"{what}: expected float images in [0, 1], got {images.dtype} (divide uint8 images by 255)")
    h, w = images.shape[-2:]
    if h != w:
        raise ValueError(f"{what}: the reader reads square images (a resize would change the camera's field of view), got {h} x {w}")
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -0.01 or hi > 1.01:
            raise ValueError(f"{what}: expected values in [0, 1], got [{lo:.3g}, {hi:.3g}] (images in [-1, 1] need (x + 1) / 2)")
    return images


# ----------------------------------------------------------------------------- data
@dataclass
class ReaderRenders:
    """Renders of N scenes, K cameras x T times each (the same T times for every camera).

    images: (N, K, T, H, W, 3) uint8. azimuth_deg, elevation_deg, radius: (N, K) cameras.
    times: (N, T) increasing scene times in [0, 1]. motions: (N, n_shapes) int64 labels
    (0 absent, 1 + m). moving: (N,) some object moves. directed: (N,) some object's motion
    shows the direction of time (`DIRECTED_MOTIONS`). seeds: (N,).
    """

    images: np.ndarray
    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    radius: np.ndarray
    times: np.ndarray
    motions: np.ndarray
    moving: np.ndarray
    directed: np.ndarray
    seeds: np.ndarray


def scene_motion_labels(scene, config: ReaderConfig | None = None) -> np.ndarray:
    """(n_shapes,) int64: 0 where the scene has no such shape, else 1 + its motion's index."""
    config = config or ReaderConfig()
    out = np.full(len(config.shapes), ABSENT, dtype=np.int64)
    for obj in scene.objects:
        out[config.shapes.index(obj.shape)] = 1 + config.motions.index(obj.motion)
    return out


def reversed_motion_labels(labels: torch.Tensor, config: ReaderConfig) -> torch.Tensor:
    """Labels of clips played backwards: grow <-> shrink, the others unchanged."""
    table = torch.arange(1 + len(config.motions))
    for m, r in REVERSED_MOTION.items():
        if m in config.motions and r in config.motions:
            table[1 + config.motions.index(m)] = 1 + config.motions.index(r)
    return table[labels]


def reader_renders(
    seeds,
    cameras: int,
    frames: int,
    rng: np.random.Generator,
    orbit: OrbitRange = DEFAULT_ORBIT,
    resolution: int = 64,
    span: tuple[float, float] = (0.3, 1.0),
    config: ReaderConfig | None = None,
    allow_eval: bool = False,
    progress: str | None = None,
) -> ReaderRenders:
    """Render each seed's scene at `cameras` random `orbit` cameras x `frames` times.

    Times: t_k = t0 + span * k / (frames - 1), span ~ U(span), t0 ~ U(0, 1 - span), so clips
    see between a third and all of the scene's motion and pairs see |d| up to 1. Evaluation
    seeds are refused unless `allow_eval`.
    """
    from ..world import make_scene

    seeds = np.asarray([int(s) for s in seeds], dtype=np.int64)
    if not allow_eval:
        check_train_seeds(seeds)
    config = config or ReaderConfig()
    n = len(seeds)
    out = ReaderRenders(
        images=np.empty((n, cameras, frames, resolution, resolution, 3), dtype=np.uint8),
        azimuth_deg=rng.uniform(*orbit.azimuth_deg, (n, cameras)),
        elevation_deg=rng.uniform(*orbit.elevation_deg, (n, cameras)),
        radius=rng.uniform(*orbit.radius, (n, cameras)),
        times=np.empty((n, frames)),
        motions=np.empty((n, len(config.shapes)), dtype=np.int64),
        moving=np.empty(n, dtype=bool),
        directed=np.empty(n, dtype=bool),
        seeds=seeds,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=progress, unit="scene", leave=False)
    for i, seed in enumerate(seeds):
        scene = make_scene(int(seed))
        length = rng.uniform(*span)
        out.times[i] = rng.uniform(0.0, 1.0 - length) + length * np.linspace(0.0, 1.0, frames)
        cams = [
            orbit_camera(out.azimuth_deg[i, k], out.elevation_deg[i, k], out.radius[i, k], orbit.fov_x_deg, resolution, resolution, orbit.target)
            for k in range(cameras)
        ]
        rgb = render_views(scene, [c for c in cams for _ in range(frames)], np.tile(out.times[i], cameras))["rgb"]
        out.images[i] = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(cameras, frames, resolution, resolution, 3)
        out.motions[i] = scene_motion_labels(scene, config)
        out.moving[i] = any(o.motion != "static" for o in scene.objects)
        out.directed[i] = any(o.motion in DIRECTED_MOTIONS for o in scene.objects)
        if bar:
            bar.update()
    if bar:
        bar.close()
    return out


# ----------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class ReaderScore:
    """Held-out errors and accuracies (medians of absolute errors; see `heldout_reader_score`)."""

    azimuth_deg: float
    elevation_deg: float
    radius: float
    relative_azimuth_deg: float
    relative_elevation_deg: float
    abs_time_delta: float
    abs_time_delta_joint: float
    abs_time_delta_by_motion: dict
    time_sign: float
    time_sign_directed: float
    copy_time_delta: float
    motion: float
    motion_per_class: dict
    direction: float
    direction_directed: float
    azimuth_by_elevation: dict
    images: int
    pairs: int
    time_pairs: int
    clips: int
    objects: int

    TARGETS = {
        "azimuth_deg": ("<=", 5.0),
        "elevation_deg": ("<=", 3.0),
        "relative_azimuth_deg": ("<=", 5.0),
        "abs_time_delta": ("<=", 0.05),
        "motion": (">=", 0.95),
        "direction": (">=", 0.95),
    }

    def meets(self) -> dict[str, bool]:
        """Target name -> met (the issue's targets)."""
        return {k: (getattr(self, k) <= v if op == "<=" else getattr(self, k) >= v) for k, (op, v) in self.TARGETS.items()}

    def summary(self) -> str:
        return (
            f"azimuth {self.azimuth_deg:.2f} deg  elevation {self.elevation_deg:.2f} deg  radius {self.radius:.3f}  "
            f"relative azimuth {self.relative_azimuth_deg:.2f} deg  |d| {self.abs_time_delta:.4f} (joint {self.abs_time_delta_joint:.4f})  "
            f"sign of d {self.time_sign:.3f} (directed scenes {self.time_sign_directed:.3f})  motion {self.motion:.3f}  "
            f"direction {self.direction:.3f} (directed scenes {self.direction_directed:.3f})  "
            f"({self.images} images, {self.time_pairs} time pairs, {self.clips} clips, {self.objects} objects)"
        )


@torch.no_grad()
def score_renders(reader: Reader, data: ReaderRenders, seed: int = 0) -> ReaderScore:
    """Score a reader on renders (medians of absolute errors).

    Pose: every image. Relative camera: every (camera, camera') pair of a scene at each time.
    |d|: same-camera pairs of moving scenes (time pairs: every pair of distinct times),
    also by what moves (the one moving motion of a scene, or "several"), and, apart, pairs
    across cameras at distinct times (joint). Sign of d: moving-scene time
    pairs with |d| >= 0.1, all and on scenes with a directed motion. Motion: every object of
    every clip (each camera's frames played forward and backward). Direction: those clips.
    """
    was = reader._eval()
    c = reader.config
    n, k, t = data.images.shape[:3]
    x = torch.from_numpy(data.images.reshape(n * k * t, *data.images.shape[3:])).permute(0, 3, 1, 2)
    feats = torch.cat([reader.encode(reader.prepare(x[i : i + 256].float() / 255.0)) for i in range(0, len(x), 256)])
    feats = feats.reshape(n, k, t, *feats.shape[1:])
    pose = reader.pose_from_outputs(reader.pose_outputs(feats.flatten(0, 2)))
    az = pose["azimuth_deg"].reshape(n, k, t).numpy()
    el = pose["elevation_deg"].reshape(n, k, t).numpy()
    rad = pose["radius"].reshape(n, k, t).numpy()
    az_err = np.abs(wrap_deg(az - data.azimuth_deg[:, :, None]))
    el_true = np.repeat(data.elevation_deg[:, :, None], t, axis=2)
    el_err = np.abs(el - el_true)
    rad_err = np.abs(rad - data.radius[:, :, None])
    # relative camera: every ordered pair of distinct cameras at the same time
    rel_az, rel_el = [], []
    for a in range(k):
        for b in range(k):
            if a != b:
                rel_az.append(np.abs(wrap_deg((az[:, b] - az[:, a]) - (data.azimuth_deg[:, b:b + 1] - data.azimuth_deg[:, a:a + 1]))))
                rel_el.append(np.abs((el[:, b] - el[:, a]) - (data.elevation_deg[:, b:b + 1] - data.elevation_deg[:, a:a + 1])))
    # time pairs (same camera) and joint pairs (camera a -> camera (a + 1) mod k), earlier
    # frame first: the pair head is antisymmetric, so the reversed pairs read exactly -d
    ia, ib = np.array([(i, j) for i in range(t) for j in range(t) if i < j]).T
    moving = np.flatnonzero(data.moving)

    # what moves in each moving scene: its one moving motion, or "several"
    moved = [sorted({c.motions[int(v) - 1] for v in row if int(v) > ABSENT} - {"static"}) for row in data.motions[moving]]
    moved = np.array([m[0] if len(m) == 1 else "several" for m in moved])

    def time_reads(cam_a, cam_b):
        fa = feats[moving][:, cam_a][:, :, ia].flatten(0, 2)
        fb = feats[moving][:, cam_b][:, :, ib].flatten(0, 2)
        raw = torch.cat([reader.pair_outputs(fa[i : i + 512], fb[i : i + 512]) for i in range(0, len(fa), 512)])
        d = (data.times[moving][:, ib] - data.times[moving][:, ia])[:, None].repeat(len(cam_a), axis=1).reshape(-1)
        directed = np.repeat(data.directed[moving], len(cam_a) * len(ia))
        return raw[:, 0].abs().numpy(), raw[:, 1].numpy(), d, directed

    cams = np.arange(k)
    m_abs, m_sign, d_true, d_directed = time_reads(cams, cams)
    j_abs, _, j_true, _ = time_reads(cams, (cams + 1) % k)
    d_err = np.abs(m_abs - np.abs(d_true))
    d_moved = np.repeat(moved, k * len(ia))
    sign_rows = np.abs(d_true) >= 0.1
    right_sign = (m_sign > 0) == (d_true > 0)
    # a copy: every image as its own pair
    f_all = feats.flatten(0, 2)[: min(512, n * k * t)]
    copy_d = float(reader.pair_outputs(f_all, f_all)[:, 0].abs().max()) if len(f_all) else 0.0
    # clips, forward and reversed
    labels = torch.from_numpy(data.motions)
    motion_right, motion_truth, dir_right, dir_directed = [], [], [], []
    for reverse in (False, True):
        clip = feats.flip(2) if reverse else feats
        logits, forward = [], []
        for i in range(0, n * k, 128):
            lo, fo = reader.clip_outputs(clip.flatten(0, 1)[i : i + 128])
            logits.append(lo)
            forward.append(fo)
        pred = torch.cat(logits).argmax(dim=-1)  # (n * k, S)
        truth = labels.repeat_interleave(k, dim=0)
        if reverse:
            truth = reversed_motion_labels(truth, c)
        present = truth > ABSENT
        motion_right.append((pred == truth)[present].numpy())
        motion_truth.append(truth[present].numpy())
        dir_right.append(((torch.cat(forward) > 0) == (not reverse)).numpy())
        dir_directed.append(np.repeat(data.directed, k))
    motion_right, motion_truth = np.concatenate(motion_right), np.concatenate(motion_truth)
    dir_right, dir_directed = np.concatenate(dir_right), np.concatenate(dir_directed)
    reader.train(was)

    def med(a):
        a = np.concatenate([np.ravel(v) for v in a]) if isinstance(a, list) else np.ravel(a)
        return float(np.median(a)) if len(a) else math.nan

    def mean(a):
        return float(np.mean(a)) if len(a) else math.nan

    bins = {}
    for lo, hi in ((0, 20), (20, 30), (30, 90)):
        rows = (el_true >= lo) & (el_true < hi)
        if rows.any():
            bins[f"{lo}-{hi}"] = round(med(az_err[rows]), 3)
    return ReaderScore(
        azimuth_deg=med(az_err), elevation_deg=med(el_err), radius=med(rad_err),
        relative_azimuth_deg=med(rel_az) if rel_az else math.nan, relative_elevation_deg=med(rel_el) if rel_el else math.nan,
        abs_time_delta=med(d_err), abs_time_delta_joint=med(np.abs(j_abs - np.abs(j_true))),
        abs_time_delta_by_motion={name: round(med(d_err[d_moved == name]), 4) for name in (*c.motions, "several") if (d_moved == name).any()},
        time_sign=mean(right_sign[sign_rows]), time_sign_directed=mean(right_sign[sign_rows & d_directed]),
        copy_time_delta=copy_d,
        motion=mean(motion_right),
        motion_per_class={name: round(mean(motion_right[motion_truth == 1 + m]), 4) for m, name in enumerate(c.motions) if (motion_truth == 1 + m).any()},
        direction=mean(dir_right), direction_directed=mean(dir_right[dir_directed]),
        azimuth_by_elevation=bins,
        images=n * k * t, pairs=len(rel_az) * n * t, time_pairs=len(m_abs), clips=len(dir_right), objects=len(motion_right),
    )


def heldout_renders(scenes: int = 200, cameras: int = 3, frames: int = 8, seed: int = 0, resolution: int = 64, span=(0.3, 1.0)) -> ReaderRenders:
    """Renders of the first `scenes` evaluation seeds at DEFAULT_ORBIT cameras (drawn with `seed`)."""
    return reader_renders(
        EVAL_SEEDS[:scenes], cameras, frames, np.random.default_rng([seed, 0xE7A2]), DEFAULT_ORBIT, resolution, span, allow_eval=True
    )


def heldout_reader_score(reader: Reader, scenes: int = 200, cameras: int = 3, seed: int = 0) -> ReaderScore:
    """Score the reader on renders of the first `scenes` evaluation seeds (`heldout_renders`)."""
    return score_renders(reader, heldout_renders(scenes, cameras, reader.config.clip_frames, seed, reader.config.image_size))


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AugmentConfig:
    """Perturbations that keep what the reader reads: brightness, blur and noise only.

    No flips (a mirrored world turns counter-clockwise orbits clockwise and swaps the
    quadrants), no shifts, zooms or rotations (they move the camera). Our choices.
    """

    brightness: tuple[float, float] = (0.9, 1.1)  # one gain per image
    blur_p: float = 0.2  # downsample-upsample to a random side in blur_side
    blur_side: tuple[int, int] = (32, 48)
    noise_std: float = 0.02  # Gaussian noise, std drawn uniform in [0, noise_std]


def augment(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Perturb a batch (B, 3, H, W) in [0, 1]; seeded through `generator`."""
    b = x.shape[0]

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    x = random_blur(x, config.blur_p, config.blur_side, generator)
    noise = torch.randn(x.shape, generator=generator) * u(0, config.noise_std, b, 1, 1, 1)
    return (x * u(*config.brightness, b, 1, 1, 1) + noise).clamp(0.0, 1.0)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the reader's losses (our choices, so each term starts near 1)."""

    pose: float = 1.0
    time: float = 5.0  # |d| in scene time: an L1 of 0.05 weighs 0.25
    sign: float = 0.3
    motion: float = 1.0
    direction: float = 0.3


@dataclass(frozen=True)
class ReaderTrainConfig:
    """A reader training run.

    Data: `train_scenes` training seeds (drawn with `seed`), each rendered at `cameras`
    TRAIN_ORBIT cameras x model.clip_frames times (`span`: the share of [0, 1] they cover).
    A step reads `pairs` pairs (their 2 x pairs images also train the pose head) and `clips`
    clips (their frames train the pose head too). Pairs: `p_time` same camera, `p_view` same
    time, `p_same` one image twice, the rest joint. Held-out score: `eval_scenes` evaluation
    seeds x `eval_cameras` DEFAULT_ORBIT cameras.
    """

    steps: int = 4000
    pairs: int = 16
    clips: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    seed: int = 0
    train_scenes: int = 1500
    cameras: int = 3
    span: tuple[float, float] = (0.3, 1.0)
    p_time: float = 0.35
    p_view: float = 0.2
    p_same: float = 0.05
    eval_scenes: int = 200
    eval_cameras: int = 3
    checkpoint_every: int = 250
    orbit: OrbitRange = TRAIN_ORBIT
    model: ReaderConfig = field(default_factory=ReaderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self):
        for name in ("steps", "pairs", "clips", "train_scenes", "eval_scenes", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReaderTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.cameras < 2 or self.eval_cameras < 2:
            raise ValueError("ReaderTrainConfig: cameras and eval_cameras must be >= 2 (view pairs need two cameras)")
        if self.train_scenes > len(TRAIN_SEEDS) or self.eval_scenes > len(EVAL_SEEDS):
            raise ValueError(f"ReaderTrainConfig: at most {len(TRAIN_SEEDS)} training and {len(EVAL_SEEDS)} evaluation scenes")
        if not 0.0 < self.span[0] <= self.span[1] <= 1.0:
            raise ValueError(f"ReaderTrainConfig.span: need 0 < lo <= hi <= 1, got {self.span}")
        if min(self.p_time, self.p_view, self.p_same) < 0 or self.p_time + self.p_view + self.p_same > 1:
            raise ValueError("ReaderTrainConfig: p_time, p_view, p_same must be >= 0 and sum to at most 1")


def training_seeds(config: ReaderTrainConfig) -> np.ndarray:
    """`train_scenes` distinct training seeds drawn with `config.seed`."""
    rng = np.random.default_rng([config.seed, 0x8EAD])
    seeds = TRAIN_SEEDS.start + rng.choice(len(TRAIN_SEEDS), size=config.train_scenes, replace=False)
    check_train_seeds(seeds)
    return seeds


class TrainingSet:
    """Training renders as tensors, and batches drawn from them with one generator."""

    def __init__(self, data: ReaderRenders, config: ReaderTrainConfig):
        self.config = config
        self.images = torch.from_numpy(data.images).permute(0, 1, 2, 5, 3, 4).contiguous()  # uint8 (N, K, T, 3, H, W)
        self.azimuth = torch.from_numpy(np.deg2rad(data.azimuth_deg)).float()
        m = config.model
        self.elevation = torch.from_numpy((data.elevation_deg - m.elevation_deg[0]) / m.elevation_deg[1]).float()
        self.radius = torch.from_numpy((data.radius - m.radius[0]) / m.radius[1]).float()
        self.times = torch.from_numpy(data.times).float()
        self.motions = torch.from_numpy(data.motions)
        self.moving = torch.from_numpy(data.moving)

    def batch(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.config
        n, k, t = self.images.shape[:3]
        p = c.pairs
        scene = torch.randint(n, (p,), generator=generator)
        cam_a, cam_b = torch.randint(k, (2, p), generator=generator)
        t_a, t_b = torch.randint(t, (2, p), generator=generator)
        u = torch.rand(p, generator=generator)
        other = (cam_a + torch.randint(1, k, (p,), generator=generator)) % k
        later = (t_a + torch.randint(1, t, (p,), generator=generator)) % t
        is_time, is_view = u < c.p_time, (u >= c.p_time) & (u < c.p_time + c.p_view)
        is_same = (u >= c.p_time + c.p_view) & (u < c.p_time + c.p_view + c.p_same)
        cam_b = torch.where(is_time | is_same, cam_a, torch.where(is_view, other, cam_b))
        t_b = torch.where(is_view | is_same, t_a, torch.where(is_time, later, t_b))
        clip_scene = torch.randint(n, (c.clips,), generator=generator)
        clip_cam = torch.randint(k, (c.clips,), generator=generator)
        reverse = torch.rand(c.clips, generator=generator) < 0.5
        clips = self.images[clip_scene, clip_cam]  # (C, T, 3, H, W)
        clips = torch.where(reverse[:, None, None, None, None], clips.flip(1), clips)
        frames = torch.cat([self.images[scene, cam_a, t_a], self.images[scene, cam_b, t_b], clips.flatten(0, 1)]).float() / 255.0
        frames = augment(frames, c.augment, generator)
        pose_scene = torch.cat([scene, scene, clip_scene.repeat_interleave(t)])
        pose_cam = torch.cat([cam_a, cam_b, clip_cam.repeat_interleave(t)])
        az = self.azimuth[pose_scene, pose_cam]
        motions = self.motions[clip_scene]
        motions = torch.where(reverse[:, None], reversed_motion_labels(motions, c.model), motions)
        clip_times = self.times[clip_scene]
        return {
            "frames": frames,
            "clip_times": torch.where(reverse[:, None], clip_times.flip(1), clip_times),  # (C, T) in playing order
            "clip_moving": self.moving[clip_scene],
            "pose": torch.stack([torch.sin(az), torch.cos(az), self.elevation[pose_scene, pose_cam], self.radius[pose_scene, pose_cam]], dim=1),
            "time_delta": self.times[scene, t_b] - self.times[scene, t_a],
            "moving": self.moving[scene],
            "motions": motions,
            "forward": (~reverse).float(),
        }


def reader_losses(reader: Reader, batch: dict, config: ReaderTrainConfig) -> dict[str, torch.Tensor]:
    """The reader's losses on a batch from `TrainingSet.batch`; "loss" is their weighted sum.

    pose: MSE of (sin, cos) of azimuth plus smooth L1 of normalised elevation and radius.
    time: L1 of the time reading against d or -d, whichever is nearer (|d| is learnt, the
    sign is left to the sign output), on moving scenes, over the pairs and each clip's first
    frame paired with its other frames. sign: binary cross-entropy of d > 0 on
    moving scenes with |d| >= 0.05. motion: cross-entropy per shape slot (absent or a motion).
    direction: binary cross-entropy of forward.
    """
    p, c, t = config.pairs, config.clips, config.model.clip_frames
    f = reader.encode(batch["frames"])
    raw = reader.pose_outputs(f)
    target = batch["pose"]
    pose = F.mse_loss(raw[:, :2], target[:, :2]) * 2.0 + F.smooth_l1_loss(raw[:, 2:], target[:, 2:], beta=0.1) * 2.0
    clip_f = f[2 * p :].reshape(c, t, *f.shape[1:])
    # the pairs, and each clip's first frame against its other frames (more time pairs for free)
    pair = reader.pair_outputs(
        torch.cat([f[:p], clip_f[:, :1].expand(-1, t - 1, -1, -1, -1).flatten(0, 1)]), torch.cat([f[p : 2 * p], clip_f[:, 1:].flatten(0, 1)])
    )
    clip_d = (batch["clip_times"][:, 1:] - batch["clip_times"][:, :1]).flatten()
    d = torch.cat([batch["time_delta"], clip_d])
    moving = torch.cat([batch["moving"], batch["clip_moving"].repeat_interleave(t - 1)])
    near = torch.minimum((pair[:, 0] - d).abs(), (pair[:, 0] + d).abs())
    time_loss = (near * moving).sum() / moving.sum().clamp(min=1)
    signed = moving & (d.abs() >= 0.05)
    sign = F.binary_cross_entropy_with_logits(pair[:, 1], (d > 0).float(), reduction="none")
    sign = (sign * signed).sum() / signed.sum().clamp(min=1)
    logits, forward = reader.clip_outputs(clip_f)
    motion = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["motions"].reshape(-1))
    direction = F.binary_cross_entropy_with_logits(forward, batch["forward"])
    w = config.weights
    total = w.pose * pose + w.time * time_loss + w.sign * sign + w.motion * motion + w.direction * direction
    return {"loss": total, "pose": pose, "time": time_loss, "sign": sign, "motion": motion, "direction": direction}


# Settings a resumed run may change besides the engine's: the held-out scoring happens after
# training and does not touch the training stream.
RESUME_MAY_CHANGE = ("eval_scenes", "eval_cameras")


def train_reader(
    config: ReaderTrainConfig | None = None, out=None, progress: bool = True, command: str | None = None, resume: bool = False
) -> tuple[Reader, dict]:
    """Train a reader; returns (reader, report) with the report's "training" and "heldout" parts.

    With `out` (a run folder) the run is the engine's, as the judge's: OUT/config.json,
    OUT/log.jsonl ({step, wall_s, loss, pose, time, sign, motion, direction}) and TensorBoard,
    and OUT/checkpoint, a reader folder as `load_reader` reads it (reader.safetensors,
    config.json, README.md) that also holds the optimizer and RNG states, written atomically
    every `checkpoint_every` steps and at the end. `resume` continues the run exactly (the
    renders are rebuilt from the seed, batches continue from the saved generator). Without
    `resume` a folder that holds a run is refused; with it a changed setting is refused, named.
    """
    from ..engine import config as engine_config
    from ..engine.checkpoint import capture_rng, has_checkpoint, load_checkpoint, read_meta, restore_rng
    from ..engine.loop import Loop, RunLog
    from ..engine.schedules import warmup_cosine

    config = config or ReaderTrainConfig()
    if resume and out is None:
        raise ValueError("train_reader: resume needs the run folder `out`")
    ckpt_dir = Path(out) / CHECKPOINT_DIR if out is not None else None
    state = None
    if out is not None:
        resuming = resume and has_checkpoint(ckpt_dir, CONFIG_NAME)
        saved = read_meta(ckpt_dir, CONFIG_NAME).get("training", {}).get("config") if resuming else None
        engine_config.start_run(out, config, resume, may_change=engine_config.MAY_CHANGE + RESUME_MAY_CHANGE, saved=saved, command=command)
        if resuming:
            state = load_checkpoint(ckpt_dir, weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME)

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # draws every batch and augmentation
    data = reader_renders(
        training_seeds(config), config.cameras, config.model.clip_frames, np.random.default_rng([config.seed, 0xDA7B]),
        config.orbit, config.model.image_size, config.span, config.model, progress="render" if progress else None,
    )
    train_set = TrainingSet(data, config)
    del data
    render_s = time.perf_counter() - started

    reader = Reader(config.model)
    optimizer = torch.optim.AdamW(reader.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log = RunLog(out, main="log") if out is not None else None
    losses: list[float] = []
    start_step, wall_s = (state.step, state.wall_s) if state is not None else (0, 0.0)
    if state is not None:
        reader.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        restore_rng(state.rng, {"batches": generator})
    if log is not None:
        log.truncate(start_step)
        losses = [float(r["loss"]) for r in log.rows()]

    def save(done: int, heldout: dict | None = None, rng_state: dict | None = None) -> None:
        training = training_info(config, done, loop.wall_s, render_s, losses, command)
        READER_FOLDER.save_checkpoint(ckpt_dir, reader, optimizer, rng_state or capture_rng({"batches": generator}), training, loop.wall_s, heldout, card=lambda info: model_card_text(reader, info))

    lr_at = warmup_cosine(config.warmup_steps, config.steps, config.lr)
    loop = Loop(
        config.steps, start_step=start_step, wall_s=wall_s, desc="train reader",
        progress=progress, log=log, save=save if out is not None else None, save_every=config.checkpoint_every,
    )
    reader.train()
    for step in loop:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        parts = reader_losses(reader, train_set.batch(generator), config)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        losses.append(parts["loss"].item())
        loop.log(step + 1, postfix={"loss": f"{np.mean(losses[-20:]):.4f}"}, **{k: v.item() for k, v in parts.items()})
    if log is not None:
        log.close()
    end_rng = capture_rng({"batches": generator})
    del train_set

    scored = time.perf_counter()
    score = heldout_reader_score(reader, config.eval_scenes, config.eval_cameras, seed=0)
    heldout = heldout_record(score, config.eval_scenes, config.eval_cameras, time.perf_counter() - scored)
    report = {"training": training_info(config, loop.step, loop.wall_s, render_s, losses, command), "heldout": heldout}
    if out is not None:
        save(loop.step, heldout, end_rng)
    return reader, report


def heldout_record(score: ReaderScore, scenes: int, cameras: int, scoring_s: float | None = None) -> dict:
    """The "heldout" part of a reader folder's config.json (what the model card shows)."""
    return {
        "seeds": f"{EVAL_SEEDS.start}..{EVAL_SEEDS.start + scenes - 1}",
        "cameras": cameras,
        "orbit": asdict(DEFAULT_ORBIT),
        **({"scoring_s": round(scoring_s, 1)} if scoring_s is not None else {}),
        **asdict(score),
    }


def write_heldout(folder, reader: Reader, heldout: dict) -> Path:
    """Put new held-out scores into a reader folder: config.json's "heldout" and the model
    card regenerated from them (each file replaced atomically); returns the folder."""
    from ..engine.cards import write_card
    from ..io import atomic_path

    folder = Path(folder)
    folder = READER_FOLDER.resolve(folder)
    data = json.loads((folder / CONFIG_NAME).read_text())
    data["heldout"] = heldout
    with atomic_path(folder / CONFIG_NAME) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
    write_card(folder, model_card_text(reader, data))
    return folder


# ----------------------------------------------------------------------------- files
def save_reader(reader: Reader, folder, info: dict | None = None) -> Path:
    """Write reader.safetensors and config.json (the ReaderConfig plus `info`) into `folder`,
    atomically, keeping a model card already there."""
    return READER_FOLDER.save(reader, folder, info)


def load_reader(path=None, device: str | torch.device = "cpu") -> Reader:
    """Load a reader folder (reader.safetensors + config.json) or a training run's folder (its
    checkpoint/ is one); None loads the shipped reader (src/fourdistill/assets/reader)."""
    return READER_FOLDER.load(path if path is not None else SHIPPED_READER, Reader, ReaderConfig, "reader", device)


def model_card_text(reader: Reader, report: dict) -> str:
    """README.md of a reader folder: what it reads, how it was trained, how well it reads."""
    from ..engine.cards import card_text

    t, h = report["training"], report["heldout"]
    cfg = t["config"]
    m = reader.config
    n_params = sum(p.numel() for p in reader.parameters())
    intro = f"""A small CNN ({n_params:,} parameters, {n_params * 4 / 1e6:.2f} MB of float32 weights) that reads
{m.image_size} x {m.image_size} images of the procedural world: the camera (azimuth, elevation, radius
in the world frame) from one image; the relative camera and the time displacement d = t_other - t_ref
from a pair of one scene; each shape's motion ({", ".join(m.motions)}) and the direction of time from a
clip of {m.clip_frames} frames of one camera. Load it with `fourdistill.evaluate.reader.load_reader()`."""
    training = [
        f"steps: {t['step']}, {cfg['pairs']} pairs + {cfg['clips']} clips per step, AdamW lr {cfg['lr']} "
        f"(warm-up {cfg['warmup_steps']}, cosine decay), weight decay {cfg['weight_decay']}, seed {cfg['seed']}",
        f"""data: {cfg["train_scenes"]} scenes of training seeds (never the evaluation seeds
  {EVAL_SEEDS.start}..{EVAL_SEEDS.stop - 1}) x {cfg["cameras"]} cameras x {m.clip_frames} times
  (elevation {cfg["orbit"]["elevation_deg"][0]:g}..{cfg["orbit"]["elevation_deg"][1]:g} deg,
  radius {cfg["orbit"]["radius"][0]:g}..{cfg["orbit"]["radius"][1]:g}, times spanning
  {cfg["span"][0]:g}..{cfg["span"][1]:g} of the scene), with brightness, blur and noise only
  (no flips or shifts: they would change what the reader reads)""",
        f"rendering the training views: {t['render_s']:.0f} s before training"
        + (f", held-out scoring {h['scoring_s']:.0f} s after it" if "scoring_s" in h else "")
        + " (not in the wall time below)",
        f"final training loss: {t['final_loss']:.4f}",
    ]
    targets = ReaderScore.TARGETS

    def row(name, label, fmt):
        op, v = targets.get(name, (None, None))
        want = f"{op} {v:g}" if op else ""
        met = ("met" if (h[name] <= v if op == "<=" else h[name] >= v) else "**missed**") if op else ""
        return f"| {label} | {format(h[name], fmt)} | {want} | {met} |"

    per_class = ", ".join(f"{k} {v:.3f}" for k, v in h["motion_per_class"].items())
    d_by_motion = ", ".join(f"{k} {v:.3f}" for k, v in h.get("abs_time_delta_by_motion", {}).items())
    by_el = ", ".join(f"{k} deg: {v:.2f}" for k, v in h["azimuth_by_elevation"].items())
    heldout = f"""Renders of evaluation seeds {h["seeds"]}, {h["cameras"]} DEFAULT_ORBIT cameras x {m.clip_frames} times each
(elevation {h["orbit"]["elevation_deg"][0]:g}..{h["orbit"]["elevation_deg"][1]:g} deg, radius
{h["orbit"]["radius"][0]:g}..{h["orbit"]["radius"][1]:g}): {h["images"]} images, {h["time_pairs"]} time pairs of moving
scenes, {h["clips"]} clips (each camera forward and reversed), {h["objects"]} objects in them.

| reading | held-out | target | |
|---|---|---|---|
{row("azimuth_deg", "azimuth error, median (deg)", ".2f")}
{row("elevation_deg", "elevation error, median (deg)", ".2f")}
{row("radius", "radius error, median (world units)", ".3f")}
{row("relative_azimuth_deg", "relative azimuth error, median (deg)", ".2f")}
{row("relative_elevation_deg", "relative elevation error, median (deg)", ".2f")}
{row("abs_time_delta", "abs(d) error, median, same-camera pairs of moving scenes", ".4f")}
{row("abs_time_delta_joint", "abs(d) error, median, pairs across cameras", ".4f")}
{row("time_sign", "sign of d right (abs(d) >= 0.1), all moving scenes", ".3f")}
{row("time_sign_directed", "sign of d right, scenes with a bounce or orbit", ".3f")}
{row("motion", "motion class right, per object", ".3f")}
{row("direction", "direction of time right, all clips", ".3f")}
{row("direction_directed", "direction of time right, clips with a bounce or orbit", ".3f")}

Motion accuracy per class (as the clip plays): {per_class}.
abs(d) error median by what moves (same-camera pairs): {d_by_motion or "not recorded"}.
Azimuth error median by elevation: {by_el}.
A copy (an image as its own pair) reads abs(d) <= {h["copy_time_delta"]:.2g} and a relative camera of 0
(the pair head is antisymmetric).

Why the direction of time and the sign of d fall short on all scenes: the world's spins and slides run
either way and a reversed grow is a shrink, so only a bounce (its hops shrink) or an orbit (always
counter-clockwise) shows which way time runs; scenes without one are read at chance. The rows "with a
bounce or orbit" measure the reader where the pixels hold the answer.
What limits abs(d) at {m.image_size} x {m.image_size}: a slide moves an object by about 0.3 world units over the
whole of [0, 1] and an orbit by 0.15 around its anchor, so an error of 0.05 in d is a shift of well
under a pixel; a bounce's height is not monotonic in time (three hops), so two frames at equal heights
on different hops are told apart only by the hops' decay.
Recompute with `fourdistill reader eval --reader FOLDER --write` (it rewrites this card)."""
    return card_text(
        "The world's reader", intro, command=t["command"], default_command="train_reader(ReaderTrainConfig(...))", training=training,
        wall_s=t["wall_s"], device="CPU", threads=t.get("threads"), sections={"Held-out accuracy": heldout},
    )
