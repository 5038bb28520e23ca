"""Time, view and joint training pairs from any 4D source (docs/method.md, 1.1).

A pair is two images of one 4D item: the *target* (the image the diffusion trainer noises)
and the *reference* (the image that goes in through the image prompt). Conventions, fixed
everywhere in the project (docs/method.md, 1.1):

- time displacement `d = t_tgt - t_ref`, times normalised to [0, 1] over the item, so d is in
  [-1, 1] and signed;
- relative camera `inverse(P_ref) @ P_tgt` (camera-to-world 4x4, OpenGL axes), and for
  object-centric orbits the spherical form (d_azimuth_deg, d_elevation_deg, d_radius) of
  `cameras.spherical_delta`;
- with probability `p_same` the pair is one frame twice (d = 0, same camera): it anchors identity.

Kinds of pair: "time" (same camera, times differ), "view" (same time, cameras differ), "joint"
(both differ) and "same" (one frame twice).

Continuous sources (`renders_any_view`, e.g. the procedural world) are sampled freely inside
their `orbit` and over t in [0, 1]. A displacement is drawn first, then the reference is drawn
uniformly among the positions that keep the target inside the range (times in [0, 1],
elevation and radius inside the orbit). So |d| and the view deltas follow the configured
ranges exactly, both signs are equally likely, and every rendered camera lies inside the
source's orbit. (Drawing the reference first and clamping the target instead would pile
displacements up at the range ends and make large |d| rare.)

Discrete sources (a video, a D-NeRF folder, a multi-view capture) pair their held frames:
time pairs need the same camera pose, view pairs equal times, joint pairs both different.
Pairs are drawn uniformly over all valid ordered (reference, target) pairs of a source, so
every pair appears in both orders equally often. The view-delta ranges apply to continuous
sources only: a held capture offers the views it has.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Camera, OrbitRange, orbit_camera, relative_pose, spherical_delta
from .sources.base import Source

MODES = ("time", "view", "joint")
KINDS = ("time", "view", "joint", "same")


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class PairConfig:
    """How pairs are drawn.

    mode: which pairs to make ("time", "view" or "joint"); a fraction `p_same` of pairs is
        "same" instead.
    time_delta_abs: range of |d| = |t_tgt - t_ref| (times in [0, 1]) for time and joint pairs.
    p_same: probability that a pair is one frame twice (d = 0, same camera).
    azimuth_delta_deg, elevation_delta_deg, radius_delta: signed ranges of the spherical view
        change for continuous sources (our choice: up to a quarter turn either way, a
        moderate tilt, a small dolly). Where a range is wider than the source's orbit, the
        change is limited to the orbit's width.
    resolution: side of the square images in pixels; held frames are centre-cropped to a
        square and resized when they differ.
    view_match_tol: two held cameras are the same pose when no c2w entry differs by more.
    time_match_tol: two held times are equal when they differ by no more.
    """

    mode: str = "time"
    time_delta_abs: tuple[float, float] = (0.0, 1.0)
    p_same: float = 0.05  # the reference implementation: 0.05 (docs/method.md, 1.1)
    azimuth_delta_deg: tuple[float, float] = (-90.0, 90.0)
    elevation_delta_deg: tuple[float, float] = (-15.0, 15.0)
    radius_delta: tuple[float, float] = (-0.3, 0.3)
    resolution: int = 64
    view_match_tol: float = 1e-4
    time_match_tol: float = 1e-6

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"PairConfig.mode: {self.mode!r} is not one of {MODES}")
        lo, hi = self.time_delta_abs
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"PairConfig.time_delta_abs: need 0 <= lo <= hi <= 1, got {self.time_delta_abs}")
        if self.mode in ("time", "joint") and hi <= 0.0:
            raise ValueError(f"PairConfig.time_delta_abs: {self.mode} pairs need a time change, got {self.time_delta_abs}")
        if not 0.0 <= self.p_same <= 1.0:
            raise ValueError(f"PairConfig.p_same: need a probability in [0, 1], got {self.p_same}")
        for name in ("azimuth_delta_deg", "elevation_delta_deg", "radius_delta"):
            a, b = getattr(self, name)
            if not (math.isfinite(a) and math.isfinite(b) and a <= b):
                raise ValueError(f"PairConfig.{name}: need finite lo <= hi, got {(a, b)}")
        a, b = self.azimuth_delta_deg
        if a < -180.0 or b > 180.0:
            raise ValueError(f"PairConfig.azimuth_delta_deg: must lie in [-180, 180], got {(a, b)}")
        view_ranges = (self.azimuth_delta_deg, self.elevation_delta_deg, self.radius_delta)
        if self.mode in ("view", "joint") and all(tuple(r) == (0.0, 0.0) for r in view_ranges):
            raise ValueError(f"PairConfig: {self.mode} pairs need a non-zero range of view change")
        if self.resolution < 1:
            raise ValueError(f"PairConfig.resolution: must be positive, got {self.resolution}")
        if self.view_match_tol < 0 or self.time_match_tol < 0:
            raise ValueError("PairConfig.view_match_tol and time_match_tol must be >= 0")


# ---------------------------------------------------------------------------------------------
# one drawn pair, before and after rendering


@dataclass(frozen=True)
class PairSpec:
    """The choices behind one pair, drawn without rendering or decoding anything.

    frame_ref / frame_tgt: held-frame indices for discrete sources, None for rendered views.
    camera_ref / camera_tgt: None where the source does not know its camera (a video).
    orbit_target: the point spherical deltas are measured about.
    """

    source_index: int
    kind: str
    time_ref: float
    time_tgt: float
    camera_ref: Camera | None
    camera_tgt: Camera | None
    frame_ref: int | None = None
    frame_tgt: int | None = None
    orbit_target: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def time_delta(self) -> float:
        """d = t_tgt - t_ref in [-1, 1]."""
        return self.time_tgt - self.time_ref

    @property
    def pose_known(self) -> bool:
        return self.camera_ref is not None and self.camera_tgt is not None

    @property
    def relative_pose(self) -> np.ndarray:
        """(4, 4) inverse(P_ref) @ P_tgt; identity where the cameras are unknown."""
        if not self.pose_known:
            return np.eye(4)
        return relative_pose(self.camera_ref.c2w, self.camera_tgt.c2w)

    @property
    def spherical_delta(self) -> np.ndarray:
        """(3,) (d_azimuth_deg, d_elevation_deg, d_radius); zeros where the cameras are unknown."""
        if not self.pose_known:
            return np.zeros(3)
        return np.array(spherical_delta(self.camera_ref.c2w, self.camera_tgt.c2w, self.orbit_target))

    @property
    def has_time_change(self) -> bool:
        return self.kind in ("time", "joint")

    @property
    def has_view_change(self) -> bool:
        return self.kind in ("view", "joint")


@dataclass
class Pair:
    """One training pair.

    target, reference: (3, H, W) float32 in [-1, 1]. target_mask, reference_mask: (1, H, W)
    float32 in [0, 1], ones where the source has no mask (then `mask_known` is False).
    """

    spec: PairSpec
    target: torch.Tensor
    reference: torch.Tensor
    target_mask: torch.Tensor
    reference_mask: torch.Tensor
    mask_known: bool
    caption: str


@dataclass
class PairBatch:
    """A collated batch, ready for a diffusion trainer.

    target, reference: (B, 3, H, W) float32 in [-1, 1]; target_mask, reference_mask:
    (B, 1, H, W) float32 (ones where unknown); mask_known: (B,) bool.
    time_delta, time_ref, time_tgt: (B,) float32, time_delta = time_tgt - time_ref in [-1, 1].
    relative_pose: (B, 4, 4) float32 inverse(P_ref) @ P_tgt (identity where unknown);
    spherical_delta: (B, 3) float32 (d_azimuth_deg, d_elevation_deg, d_radius) (zeros where
    unknown); pose_known: (B,) bool. has_time_change, has_view_change: (B,) bool.
    source_index: (B,) int64. captions, kind: B strings each.
    """

    target: torch.Tensor
    reference: torch.Tensor
    target_mask: torch.Tensor
    reference_mask: torch.Tensor
    mask_known: torch.Tensor
    time_delta: torch.Tensor
    time_ref: torch.Tensor
    time_tgt: torch.Tensor
    relative_pose: torch.Tensor
    spherical_delta: torch.Tensor
    pose_known: torch.Tensor
    has_time_change: torch.Tensor
    has_view_change: torch.Tensor
    source_index: torch.Tensor
    captions: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.target.shape[0]

    @staticmethod
    def images(x: torch.Tensor) -> np.ndarray:
        """A (B, 3, H, W) image tensor in [-1, 1] (reference or target) as (B, H, W, 3) float32 in [0, 1]."""
        return ((x.detach().permute(0, 2, 3, 1).float().cpu().numpy() + 1.0) / 2.0).clip(0, 1).astype(np.float32)

    def to(self, device) -> "PairBatch":
        """The same batch with every tensor moved to `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return PairBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


def collate_pairs(pairs: Sequence[Pair]) -> PairBatch:
    """Stack pairs (all at one resolution) into a `PairBatch`."""
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    specs = [p.spec for p in pairs]

    def floats(values, shape=()):
        return torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(len(pairs), *shape), dtype=torch.float32)

    return PairBatch(
        target=torch.stack([p.target for p in pairs]),
        reference=torch.stack([p.reference for p in pairs]),
        target_mask=torch.stack([p.target_mask for p in pairs]),
        reference_mask=torch.stack([p.reference_mask for p in pairs]),
        mask_known=torch.tensor([p.mask_known for p in pairs], dtype=torch.bool),
        time_delta=floats([s.time_delta for s in specs]),
        time_ref=floats([s.time_ref for s in specs]),
        time_tgt=floats([s.time_tgt for s in specs]),
        relative_pose=floats([s.relative_pose for s in specs], (4, 4)),
        spherical_delta=floats([s.spherical_delta for s in specs], (3,)),
        pose_known=torch.tensor([s.pose_known for s in specs], dtype=torch.bool),
        has_time_change=torch.tensor([s.has_time_change for s in specs], dtype=torch.bool),
        has_view_change=torch.tensor([s.has_view_change for s in specs], dtype=torch.bool),
        source_index=torch.tensor([s.source_index for s in specs], dtype=torch.int64),
        captions=[p.caption for p in pairs],
        kind=[s.kind for s in specs],
    )


# ---------------------------------------------------------------------------------------------
# drawing displacements


def _draw_shifted(rng: np.random.Generator, lo: float, hi: float, delta: float, periodic: bool = False) -> tuple[float, float]:
    """(ref, tgt) with ref uniform among the values in [lo, hi] whose ref + delta stays there too.

    A delta larger than the interval is limited to its width. On a periodic interval (a full
    circle of azimuth) any ref works.
    """
    if periodic:
        ref = rng.uniform(lo, hi)
        return ref, ref + delta
    width = hi - lo
    delta = min(max(delta, -width), width)
    ref = rng.uniform(max(lo, lo - delta), min(hi, hi - delta))
    return ref, min(max(ref + delta, lo), hi)


def _pose_ids(cameras: Sequence[Camera | None], tol: float) -> np.ndarray:
    """(N,) int: frames with the same id have the same pose (c2w entries within `tol`)."""
    n = len(cameras)
    ids = np.zeros(n, dtype=np.int64)
    reps = np.empty((n, 16))
    count = 0
    for k, cam in enumerate(cameras):
        flat = cam.c2w.reshape(16)
        if count:
            diff = np.abs(reps[:count] - flat).max(axis=1)
            j = int(np.argmin(diff))
            if diff[j] <= tol:
                ids[k] = j
                continue
        reps[count] = flat
        ids[k] = count
        count += 1
    return ids


@dataclass
class _HeldPairs:
    """The valid ordered (reference, target) pairs of one discrete source.

    times: (N,) float64. pose_ids: (N,) int64. partner_counts: (N,) number of valid targets
    per reference frame; a reference is drawn with probability proportional to it, then its
    target uniformly, which is uniform over all valid ordered pairs.
    """

    mode: str
    times: np.ndarray
    pose_ids: np.ndarray
    cameras: list
    delta_abs: tuple[float, float]
    time_tol: float
    partner_counts: np.ndarray = field(init=False)
    cumulative: np.ndarray = field(init=False)

    def __post_init__(self):
        n = len(self.times)
        counts = np.zeros(n, dtype=np.int64)
        chunk = max(1, 4_000_000 // max(n, 1))
        for start in range(0, n, chunk):
            rows = np.arange(start, min(n, start + chunk))
            counts[rows] = self.valid_targets(rows).sum(axis=1)
        self.partner_counts = counts
        self.cumulative = np.cumsum(counts)

    def valid_targets(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), N) bool: which frames form a `mode` pair with each reference row."""
        dt = np.abs(self.times[None, :] - self.times[rows, None])
        same_time = dt <= self.time_tol
        same_pose = self.pose_ids[None, :] == self.pose_ids[rows, None]
        lo, hi = self.delta_abs
        time_ok = (dt >= lo - self.time_tol) & (dt <= hi + self.time_tol) & ~same_time
        if self.mode == "time":
            return same_pose & time_ok
        if self.mode == "view":
            return same_time & ~same_pose
        return time_ok & ~same_pose

    @property
    def total(self) -> int:
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        u = rng.random() * self.total
        ref = int(np.searchsorted(self.cumulative, u, side="right"))
        targets = np.flatnonzero(self.valid_targets(np.array([ref]))[0])
        return ref, int(targets[rng.integers(len(targets))])

    def why_empty(self) -> str:
        n_poses = len(np.unique(self.pose_ids))
        n_times = len(np.unique(np.round(self.times / max(self.time_tol, 1e-12))))
        lo, hi = self.delta_abs
        range_text = f"between {lo:g} and {hi:g} apart in time (PairConfig.time_delta_abs)"
        if self.mode == "view":
            if n_poses == 1:
                return "every frame has the same camera (one fixed camera), so there are no view pairs"
            return "no two frames with different cameras share a time"
        if self.mode == "time":
            if n_times == 1:
                return "every frame is at the same time (a static capture), so there are no time pairs"
            return f"no two frames with the same camera are {range_text}"
        if n_poses == 1:
            return "every frame has the same camera, so there are no joint pairs"
        if n_times == 1:
            return "every frame is at the same time, so there are no joint pairs"
        return f"no two frames with different cameras are {range_text}"


# ---------------------------------------------------------------------------------------------
# images


def _square_resized(image: np.ndarray, resolution: int, mode: str) -> torch.Tensor:
    """(H, W, C) or (H, W) array -> (C, resolution, resolution) float32 tensor in [0, 1].

    Non-square images are centre-cropped to a square first. Downscaling is antialiased.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if x.ndim == 2:
        x = x[..., None]
    x = x.permute(2, 0, 1)
    _, h, w = x.shape
    side = min(h, w)
    if (h, w) != (side, side):
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top : top + side, left : left + side]
    if side != resolution:
        x = F.interpolate(x[None], size=(resolution, resolution), mode=mode, align_corners=False, antialias=True)[0]
    return x.clamp(0.0, 1.0).contiguous()


def _image_and_mask(rgb, mask, resolution: int, where: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Frame arrays -> image (3, R, R) in [-1, 1], mask (1, R, R) (ones if unknown), mask known."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{where}: rgb must have shape (H, W, 3), got {rgb.shape}")
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{where}: rgb has non-finite values")
    image = _square_resized(rgb, resolution, "bicubic") * 2.0 - 1.0
    if mask is None:
        return image, torch.ones(1, resolution, resolution), False
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"{where}: mask shape {mask.shape} does not match rgb {rgb.shape[:2]}")
    return image, _square_resized(mask, resolution, "bilinear"), True


# ---------------------------------------------------------------------------------------------
# the sampler


class PairSampler:
    """Draws pairs from a sequence of 4D sources.

    sources: any Sequence of `Source`s. A list or tuple is checked in full at construction
    (an impossible mode raises ValueError there). Any other Sequence is treated as lazy (e.g.
    `WorldScenes`, which builds a scene when indexed): its first source is checked at
    construction and each other one when first drawn.
    Each pair draws its source uniformly, then the pair (see the module notes).
    seed: the sampler's own stream for `sample` / `batch` without an explicit `rng`.
    """

    def __init__(self, sources: Sequence[Source], config: PairConfig | None = None, seed: int = 0):
        self.sources = sources
        self.config = config or PairConfig()
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        if len(sources) == 0:
            raise ValueError("PairSampler needs at least one source")
        self._held: dict[int, _HeldPairs] = {}
        check = range(len(sources)) if isinstance(sources, (list, tuple)) else [0]
        for i in check:
            self._check(i, sources[i])

    # -- per-source preparation

    def _name(self, index: int, source: Source) -> str:
        return f"source {index} ({source.kind}{': ' + source.name if source.name else ''})"

    def _check(self, index: int, source: Source) -> None:
        """Raise ValueError if `source` cannot give pairs of the configured mode."""
        if source.renders_any_view:
            if not isinstance(getattr(source, "orbit", None), OrbitRange):
                raise ValueError(f"{self._name(index, source)} renders any view but has no `orbit` (an OrbitRange) to draw cameras in")
            return
        self._held_pairs(index, source)

    def _held_pairs(self, index: int, source: Source) -> _HeldPairs:
        held = self._held.get(index)
        if held is not None:
            return held
        infos = source.infos()
        name = self._name(index, source)
        if not infos:
            raise ValueError(f"{name} holds no frames")
        cameras = [info.camera for info in infos]
        known = [c is not None for c in cameras]
        if any(known) and not all(known):
            raise ValueError(f"{name} mixes frames with and without cameras; pairs need one or the other")
        times = np.array([info.time01 for info in infos], dtype=np.float64)
        if not np.all(np.isfinite(times)) or times.min() < 0.0 or times.max() > 1.0:
            raise ValueError(f"{name} has frame times outside [0, 1]: {times.min()}..{times.max()}")
        pose_ids = _pose_ids(cameras, self.config.view_match_tol) if all(known) else np.zeros(len(infos), dtype=np.int64)
        held = _HeldPairs(self.config.mode, times, pose_ids, cameras, self.config.time_delta_abs, self.config.time_match_tol)
        if held.total == 0:
            raise ValueError(f"{name} cannot give {self.config.mode} pairs: {held.why_empty()}")
        self._held[index] = held
        return held

    # -- drawing choices

    def _draw(self, rng: np.random.Generator) -> tuple[Source, PairSpec]:
        index = int(rng.integers(len(self.sources)))
        source = self.sources[index]
        kind = "same" if rng.random() < self.config.p_same else self.config.mode
        if source.renders_any_view:
            self._check(index, source)
            return source, self._draw_rendered(rng, index, source, kind)
        return source, self._draw_held(rng, index, source, kind)

    def _draw_rendered(self, rng: np.random.Generator, index: int, source: Source, kind: str) -> PairSpec:
        cfg, orbit = self.config, source.orbit
        if kind in ("time", "joint"):
            magnitude = rng.uniform(*cfg.time_delta_abs)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            t_ref, t_tgt = _draw_shifted(rng, 0.0, 1.0, sign * magnitude)
        else:
            t_ref = t_tgt = rng.uniform(0.0, 1.0)
        if kind in ("view", "joint"):
            d_az = rng.uniform(*cfg.azimuth_delta_deg)
            d_el = rng.uniform(*cfg.elevation_delta_deg)
            d_r = rng.uniform(*cfg.radius_delta)
        else:
            d_az = d_el = d_r = 0.0
        az_lo, az_hi = orbit.azimuth_deg
        az = _draw_shifted(rng, az_lo, az_hi, d_az, periodic=az_hi - az_lo >= 360.0)
        el = _draw_shifted(rng, *orbit.elevation_deg, d_el)
        r = _draw_shifted(rng, *orbit.radius, d_r)
        res = cfg.resolution
        cam_ref = orbit_camera(az[0], el[0], r[0], orbit.fov_x_deg, res, res, orbit.target)
        cam_tgt = cam_ref if kind in ("time", "same") else orbit_camera(az[1], el[1], r[1], orbit.fov_x_deg, res, res, orbit.target)
        return PairSpec(index, kind, float(t_ref), float(t_tgt), cam_ref, cam_tgt, orbit_target=tuple(orbit.target))

    def _draw_held(self, rng: np.random.Generator, index: int, source: Source, kind: str) -> PairSpec:
        held = self._held_pairs(index, source)
        if kind == "same":
            ref = tgt = int(rng.integers(len(held.times)))
        else:
            ref, tgt = held.draw(rng)
        orbit = getattr(source, "orbit", None)
        target = tuple(orbit.target) if isinstance(orbit, OrbitRange) else (0.0, 0.0, 0.0)
        return PairSpec(
            index, kind, float(held.times[ref]), float(held.times[tgt]), held.cameras[ref], held.cameras[tgt], ref, tgt, target
        )

    def sample_spec(self, rng: np.random.Generator | None = None) -> PairSpec:
        """Draw one pair's source, cameras and times without rendering or decoding."""
        return self._draw(self.rng if rng is None else rng)[1]

    # -- images

    def _images(self, drawn: list[tuple[Source, PairSpec]]) -> list[Pair]:
        """Render or decode the images of drawn pairs; one `render_batch` call per source where offered."""
        res = self.config.resolution
        # for each pair, where its reference and target images are: (source index, slot)
        slots: list[tuple[int, int]] = []
        wanted: dict[int, tuple[Source, list]] = {}  # source index -> (source, [(camera, time) or frame index])
        for source, spec in drawn:
            items = wanted.setdefault(spec.source_index, (source, []))[1]
            if source.renders_any_view:
                ref, tgt = (spec.camera_ref, spec.time_ref), (spec.camera_tgt, spec.time_tgt)
            else:
                ref, tgt = spec.frame_ref, spec.frame_tgt
            ref_slot = len(items)
            items.append(ref)
            tgt_slot = ref_slot
            if spec.kind != "same":
                tgt_slot = len(items)
                items.append(tgt)
            slots.append((ref_slot, tgt_slot))

        images: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
        for index, (source, items) in wanted.items():
            if not source.renders_any_view:
                decoded = {k: source.frame(k) for k in sorted(set(items))}
                images[index] = [(decoded[k].rgb, decoded[k].mask) for k in items]
            elif hasattr(source, "render_batch"):
                out = source.render_batch([c for c, _ in items], [t for _, t in items])
                masks = out.get("mask")
                images[index] = [(out["rgb"][k], None if masks is None else masks[k]) for k in range(len(items))]
            else:
                frames = [source.render(c, t) for c, t in items]
                images[index] = [(f.rgb, f.mask) for f in frames]

        pairs = []
        for (source, spec), (ref_slot, tgt_slot) in zip(drawn, slots):
            found = images[spec.source_index]
            where = self._name(spec.source_index, source)
            reference, reference_mask, ref_known = _image_and_mask(*found[ref_slot], res, f"{where} reference")
            target, target_mask, tgt_known = _image_and_mask(*found[tgt_slot], res, f"{where} target")
            pairs.append(Pair(spec, target, reference, target_mask, reference_mask, ref_known and tgt_known, source.caption or ""))
        return pairs

    # -- public drawing

    def sample(self, rng: np.random.Generator | None = None) -> Pair:
        """Draw and render one pair."""
        return self._images([self._draw(self.rng if rng is None else rng)])[0]

    def batch(self, batch_size: int, rng: np.random.Generator | None = None) -> PairBatch:
        """Draw and render `batch_size` pairs: the same as collating that many `sample` calls."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rng = self.rng if rng is None else rng
        return collate_pairs(self._images([self._draw(rng) for _ in range(batch_size)]))


class PairStream(torch.utils.data.IterableDataset):
    """Batches of pairs for a `torch.utils.data.DataLoader` (use `batch_size=None`).

    Batches are made here rather than by the loader so that continuous sources render a whole
    batch at once. Each worker draws from its own stream seeded by (seed, epoch, worker id),
    so a run is reproducible for a given number of workers. num_batches: batches per pass
    over the stream (split across workers); None for an endless stream.
    """

    def __init__(self, sampler: PairSampler, batch_size: int, num_batches: int | None = None, seed: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.num_batches = num_batches
        self.seed = sampler.seed if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different pairs in each epoch (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[PairBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        count = None if self.num_batches is None else len(range(worker, self.num_batches, workers))
        made = 0
        while count is None or made < count:
            yield self.sampler.batch(self.batch_size, rng)
            made += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless PairStream has no length")
        return self.num_batches
