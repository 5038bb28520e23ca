"""Volume rendering of a 4D field: rays, box clipping, stratified samples, an occupancy grid
over space and time that skips empty space, and alpha compositing with early stop.

A field for this module is anything with `bound` (half-size of the scene box [-bound, bound]^3),
`density(x, t)` -> (N,), `forward(x, t)` -> (density (N,), rgb (N, 3)) and `background(dirs)`
-> (N, 3): `Field4D`, or an analytic field in a test.

Per ray, `n_samples` stratified samples cover the segment inside the box (one per equal bin,
jittered in training, bin centres otherwise); a sample's step is its bin width. Samples whose
occupancy cell is empty are skipped: their density counts as 0. The rest are evaluated
segment by segment along the ray and a ray stops being evaluated once its transmittance falls
below `early_stop_eps` (nerfacc's default 1e-4). Compositing (Max 1995, as NeRF):

    alpha_i = 1 - exp(-sigma_i dt_i),  T_i = prod_{j<i} (1 - alpha_j),  w_i = T_i alpha_i
    rgb = sum_i w_i c_i + (1 - sum_i w_i) * background,  opacity = sum_i w_i,
    depth = sum_i w_i s_i / opacity  (s_i the sample's distance along the unit ray; inf where
    opacity is 0).

`render_cameras` renders B cameras at B times as one differentiable batch and `render_clip` T
frames of one camera, what the multi-view and video teachers of 4D-fy (Bahmani et al. 2024)
read each step; `render_image` is one camera without autograd. Compositing runs in float32, or
in float64 for a float64 field (gradient checks against finite differences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn


@dataclass
class RenderConfig:
    """How rays are sampled and composited.

    n_samples: stratified samples per ray across the box (4D-fy uses 512 at 256^2 renders; the
    box chord is at most 2 sqrt(3) bound, so 128 gives steps of <= 0.027 world units, finer than
    a 64^2 pixel at the world's orbit radius). early_stop_eps: transmittance below which a ray
    stops (nerfacc: 1e-4). segment: samples evaluated per ray between early-stop checks.
    chunk: rays per batch when rendering whole images. near: closest distance along a ray.
    """

    n_samples: int = 128
    early_stop_eps: float = 1e-4  # nerfacc OccGridEstimator.sampling: early_stop_eps = 1e-4
    segment: int = 32
    chunk: int = 8192
    near: float = 0.05

    def __post_init__(self):
        if self.n_samples < 1 or self.segment < 1 or self.chunk < 1:
            raise ValueError("RenderConfig: n_samples, segment and chunk must be >= 1")
        if not 0.0 <= self.early_stop_eps < 1.0:
            raise ValueError(f"RenderConfig.early_stop_eps must be in [0, 1), got {self.early_stop_eps}")


@dataclass
class OccupancyConfig:
    """An occupancy grid over (t, x, y, z) refreshed as nerfacc's OccGridEstimator does.

    resolution: cells per axis in space (4D-fy: 32^3). time_bins: cells along t (1 for a static
    field). update_every: refresh period in steps (nerfacc: 16). ema_decay: decay of each
    cell's running max of opacity (nerfacc: 0.95). threshold: a cell is occupied when its
    opacity sigma * step exceeds min(threshold, mean over cells) (nerfacc: occ_thre = 0.01).
    warmup_steps: before this, every refresh evaluates every cell; after it, a random quarter of
    all cells plus as many occupied ones (nerfacc: 256 steps).
    dilate: also mark the neighbours (in x, y, z and t) of occupied cells occupied (our choice,
    not nerfacc's). A cell's opacity comes from one random point per refresh, so a surface that
    only clips a cell, or an object that passes through a cell during part of its time bin, can
    be missed; growing the grid by one cell keeps skipping from cutting such pixels.
    """

    resolution: int = 32  # 4D-fy: occupancy grid 32^3
    time_bins: int = 16
    update_every: int = 16  # nerfacc update_every_n_steps(n=16)
    ema_decay: float = 0.95  # nerfacc
    threshold: float = 0.01  # nerfacc occ_thre
    warmup_steps: int = 256  # nerfacc
    dilate: bool = True

    def __post_init__(self):
        if self.resolution < 1 or self.time_bins < 1 or self.update_every < 1:
            raise ValueError("OccupancyConfig: resolution, time_bins and update_every must be >= 1")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"OccupancyConfig.ema_decay must be in [0, 1], got {self.ema_decay}")


# ----------------------------------------------------------------------------- rays
def camera_rays(camera, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through pixel centres of `camera`: origins and unit directions, (H*W, 3) float32,
    row-major over the image."""
    o, d = camera.rays()
    o = torch.from_numpy(np.ascontiguousarray(o.reshape(-1, 3), dtype=np.float32))
    d = torch.from_numpy(np.ascontiguousarray(d.reshape(-1, 3), dtype=np.float32))
    return o.to(device), d.to(device)


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test against [-bound, bound]^3: entry and exit distances (R,), (R,).

    A ray misses the box where exit <= entry (exit < 0 means the box lies behind the origin).
    """
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    inv = 1.0 / safe
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


def camera_sees_box(camera, bound: float = 1.0, near: float = 0.0) -> bool:
    """Whether any pixel ray of `camera` enters the scene box in front of the camera."""
    o, d = camera_rays(camera)
    t0, t1 = ray_box(o, d, bound)
    return bool(((t1 > torch.clamp(t0, min=near))).any())


# ----------------------------------------------------------------------------- occupancy
class OccupancyGrid(nn.Module):
    """Binary occupancy over (time bin, x, y, z) cells of the scene box, from an EMA of density.

    Buffers: `opacity_ema` (T, R, R, R) float32, the running max of sigma * step per cell
    (-1 for cells never evaluated); `occupied` (T, R, R, R) bool. Until the first refresh every
    cell counts as occupied. `step_size` is the typical sample spacing the opacity refers to.
    """

    def __init__(self, config: OccupancyConfig, bound: float, step_size: float):
        super().__init__()
        self.config = config
        self.bound = float(bound)
        self.step_size = float(step_size)
        shape = (config.time_bins, config.resolution, config.resolution, config.resolution)
        self.register_buffer("opacity_ema", torch.full(shape, -1.0))
        self.register_buffer("occupied", torch.ones(shape, dtype=torch.bool))

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_index(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Flat cell index of points x (N, 3) at times t (N,) -> (N,) int64."""
        r, nt = self.config.resolution, self.config.time_bins
        ijk = ((x + self.bound) / (2.0 * self.bound) * r).floor().long().clamp(0, r - 1)
        tb = (t * nt).floor().long().clamp(0, nt - 1)
        return ((tb * r + ijk[:, 0]) * r + ijk[:, 1]) * r + ijk[:, 2]

    def query(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Occupied? for points x (N, 3) at times t (N,) -> (N,) bool."""
        return self.occupied.reshape(-1)[self.cell_index(x, t)]

    @torch.no_grad()
    def refresh(self, field, step: int, generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        """Re-evaluate density at one jittered point per chosen cell and update the EMA.

        Call every step; it works only when `step % update_every == 0`.
        """
        cfg = self.config
        if step % cfg.update_every != 0:
            return
        n_cells = self.occupied.numel()
        device = self.occupied.device
        if step < cfg.warmup_steps:
            cells = torch.arange(n_cells, device=device)
        else:
            quarter = max(n_cells // 4, 1)
            cells = torch.randint(0, n_cells, (quarter,), generator=generator, device=device)
            occupied = torch.nonzero(self.occupied.reshape(-1))[:, 0]
            if len(occupied):
                pick = torch.randint(0, len(occupied), (quarter,), generator=generator, device=device)
                cells = torch.cat([cells, occupied[pick]])
        r = cfg.resolution
        ema = self.opacity_ema.reshape(-1)
        for start in range(0, len(cells), chunk):
            c = cells[start : start + chunk]
            tb, rest = c // r**3, c % r**3
            ijk = torch.stack([rest // (r * r), (rest // r) % r, rest % r], dim=-1).float()
            jitter = torch.rand(len(c), 4, generator=generator, device=device)
            x = (ijk + jitter[:, :3]) / r * (2.0 * self.bound) - self.bound
            t = (tb.float() + jitter[:, 3]) / cfg.time_bins
            opacity = field.density(x, t).float() * self.step_size
            ema[c] = torch.maximum(ema[c] * cfg.ema_decay, opacity)
        seen = ema >= 0
        threshold = min(cfg.threshold, float(ema[seen].mean())) if bool(seen.any()) else cfg.threshold
        occupied = (self.opacity_ema > threshold) | (self.opacity_ema < 0)
        self.occupied.copy_(dilate(occupied) if cfg.dilate else occupied)


def dilate(grid: torch.Tensor) -> torch.Tensor:
    """Grow occupied cells by one cell along t, x, y and z (3^4 neighbourhood): (T, R, R, R) bool."""
    g = torch.nn.functional.max_pool3d(grid.float()[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
    if g.shape[0] > 1:  # and along time
        g = torch.maximum(g, torch.cat([g[1:], g[-1:]]))
        g = torch.maximum(g, torch.cat([g[:1], g[:-1]]))
    return g > 0


# ----------------------------------------------------------------------------- rendering
def render_rays(
    field,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    times: torch.Tensor,
    config: RenderConfig,
    grid: OccupancyGrid | None = None,
    background: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stratified: bool = False,
) -> dict[str, torch.Tensor]:
    """Render rays through `field`.

    origins, dirs: (R, 3) world rays, dirs unit length; times: (R,) in [0, 1].
    background: (3,) or (R, 3) colour, or None for `field.background(dirs)`.
    stratified: jitter samples inside their bins (training) with `generator`; otherwise bin centres.
    Returns rgb (R, 3), opacity (R,), depth (R,), distortion (R,) (mip-NeRF 360's regulariser,
    in world units) and `samples`, the number of field evaluations.
    Gradients flow to the field (and to a background tensor that requires grad) when autograd
    is on. Outputs are float32, or float64 when the field returns float64.
    """
    n_rays = origins.shape[0]
    device = origins.device
    if background is None:
        bg = field.background(dirs) if n_rays else torch.zeros(0, 3, device=device)
    else:
        bg = torch.as_tensor(background, dtype=torch.float32, device=device).expand(n_rays, 3)
    rgb_out = bg
    opacity_out = torch.zeros(n_rays, device=device)
    depth_out = torch.full((n_rays,), math.inf, device=device)
    t_near, t_far = ray_box(origins, dirs, field.bound)
    t_near = t_near.clamp(min=config.near)
    hit = torch.nonzero(t_far > t_near)[:, 0]
    if len(hit) == 0:
        return {"rgb": rgb_out, "opacity": opacity_out, "depth": depth_out, "distortion": opacity_out, "samples": torch.tensor(0)}

    o, d, tm = origins[hit], dirs[hit], times[hit]
    lo, hi = t_near[hit, None], t_far[hit, None]
    n_hit, s = len(hit), config.n_samples
    dt = (hi - lo) / s  # (R', 1)
    if stratified:
        u = torch.rand(n_hit, s, generator=generator, device=device)
    else:
        u = torch.full((n_hit, s), 0.5, device=device)
    dist = lo + (torch.arange(s, device=device, dtype=torch.float32) + u) * dt  # (R', S)
    points = o[:, None, :] + dist[..., None] * d[:, None, :]  # (R', S, 3)
    if grid is not None:
        candidate = grid.query(points.reshape(-1, 3), tm.repeat_interleave(s)).reshape(n_hit, s)
    else:
        candidate = torch.ones(n_hit, s, dtype=torch.bool, device=device)

    # evaluate segment by segment, dropping rays whose transmittance fell below eps
    log_eps = math.log(config.early_stop_eps) if config.early_stop_eps > 0 else -math.inf
    log_transmittance = torch.zeros(n_hit, device=device)
    flat_index, sigmas, colours = [], [], []
    for s0 in range(0, s, config.segment):
        s1 = min(s0 + config.segment, s)
        alive = log_transmittance > log_eps
        rows, cols = torch.nonzero(candidate[:, s0:s1] & alive[:, None], as_tuple=True)
        if len(rows) == 0:
            if not bool(alive.any()):
                break
            continue
        cols = cols + s0
        sigma, colour = field(points[rows, cols], tm[rows])
        flat_index.append(rows * s + cols)
        sigmas.append(sigma)
        colours.append(colour)
        optical = (sigma.detach() * dt[rows, 0]).float()
        log_transmittance = log_transmittance - torch.zeros(n_hit, device=device).index_add_(0, rows, optical)

    if not flat_index:
        return {"rgb": rgb_out, "opacity": opacity_out, "depth": depth_out, "distortion": opacity_out, "samples": torch.tensor(0)}
    index = torch.cat(flat_index)
    dtype = torch.promote_types(sigmas[0].dtype, torch.float32)  # float64 only for a float64 field
    sigma_dense = torch.zeros(n_hit * s, device=device, dtype=dtype).index_put((index,), torch.cat(sigmas).to(dtype)).reshape(n_hit, s)
    colour_dense = torch.zeros(n_hit * s, 3, device=device, dtype=dtype).index_put((index,), torch.cat(colours).to(dtype)).reshape(n_hit, s, 3)
    tau = sigma_dense * dt
    alpha = 1.0 - torch.exp(-tau)
    transmittance = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
    weights = transmittance * alpha  # (R', S)
    opacity = weights.sum(dim=1)
    rgb = (weights[..., None] * colour_dense).sum(dim=1) + (1.0 - opacity)[:, None] * bg[hit]
    depth = torch.where(opacity > 1e-6, (weights * dist).sum(dim=1) / opacity.clamp_min(1e-6), torch.full_like(opacity, math.inf))
    # mip-NeRF 360's distortion: sum_ij w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 dt_i; with samples in
    # order along the ray the pair sum is 2 sum_i w_i (s_i W_<i - S_<i), W and S prefix sums of w and w s
    w_before = torch.cumsum(weights, dim=1) - weights
    ws_before = torch.cumsum(weights * dist, dim=1) - weights * dist
    distortion = 2.0 * (weights * (dist * w_before - ws_before)).sum(dim=1) + (weights**2).sum(dim=1) * dt[:, 0] / 3.0

    rgb_out = rgb_out.to(dtype).index_put((hit,), rgb)
    opacity_out = opacity_out.to(dtype).index_put((hit,), opacity)
    depth_out = depth_out.to(dtype).index_put((hit,), depth)
    distortion_out = torch.zeros(n_rays, device=device, dtype=dtype).index_put((hit,), distortion)
    return {"rgb": rgb_out, "opacity": opacity_out, "depth": depth_out, "distortion": distortion_out, "samples": torch.tensor(len(index))}


def random_background(n_images: int, p: float = 0.5, generator: torch.Generator | None = None, device=None) -> torch.Tensor | None:
    """threestudio's background augmentation, which 4D-fy trains with: with probability p the whole
    batch gets random solid colours, one per image ((n_images, 3), uniform in [0, 1]); otherwise
    None, meaning the field's own background. p = 0.5 as in threestudio's random_aug_prob.
    generator: a CPU generator (None: torch's global one); the colours are moved to `device`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_background: p must lie in [0, 1], got {p}")
    if float(torch.rand((), generator=generator)) >= p:
        return None
    return torch.rand(n_images, 3, generator=generator).to(device)


def _field_device(field) -> torch.device | None:
    """Where the field's parameters live (CPU for an analytic field without parameters)."""
    if isinstance(field, nn.Module):
        return next((p.device for p in field.parameters()), torch.device("cpu"))
    return None


def _camera_times(times, n_cameras: int) -> list[float]:
    """One time in [0, 1] per camera: a number (or 0-d tensor) is broadcast, a sequence must match."""
    if isinstance(times, torch.Tensor):
        times = times.detach().cpu().double().reshape(-1).tolist() if times.dim() else float(times)
    elif isinstance(times, np.ndarray):
        times = times.astype(np.float64).reshape(-1).tolist() if times.ndim else float(times)
    if isinstance(times, (int, float, np.generic)):
        times = [float(times)] * n_cameras
    times = [float(t) for t in times]
    if len(times) != n_cameras:
        raise ValueError(f"times: got {len(times)} times for {n_cameras} cameras (give one per camera, or one number for all)")
    bad = [t for t in times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"times must lie in [0, 1], got {bad[0]}")
    return times


def _chunk_background(background, dirs: torch.Tensor, image: torch.Tensor, n_images: int):
    """What render_rays takes as background for rays `dirs` (R, 3) of images `image` (R,):
    None (the field's own), a (3,) colour or an (R, 3) tensor."""
    if background is None:
        return None
    if callable(background):
        bg = background(dirs)
        if tuple(bg.shape) != (dirs.shape[0], 3):
            raise ValueError(f"background: a callable must map directions (R, 3) to colours (R, 3), got {tuple(bg.shape)}")
        return bg
    bg = torch.as_tensor(background, dtype=torch.float32, device=dirs.device)
    if bg.shape == (3,):
        return bg
    if bg.shape == (n_images, 3):
        return bg[image]
    raise ValueError(f"background: expected a colour (3,), one colour per image ({n_images}, 3) or a callable, got shape {tuple(bg.shape)}")


def _render_chunk(field, grid, config, origins, dirs, times, background, seed, stratified):
    generator = torch.Generator(device=origins.device).manual_seed(seed) if stratified else None
    out = render_rays(field, origins, dirs, times, config, grid, background, generator, stratified)
    return out["rgb"], out["opacity"], out["depth"], out["distortion"], out["samples"]


def render_cameras(
    field,
    grid: OccupancyGrid | None,
    cameras,
    times,
    render_cfg: RenderConfig | None = None,
    background=None,
    requires_grad: bool = True,
    chunk: int | None = None,
    checkpoint: bool = True,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Render B cameras at B times as one batch, differentiable with respect to the field.

    What score distillation needs each step: 4D-fy (Bahmani et al. 2024) renders 4 views for the
    multi-view teacher and T frames of one view for the video teacher, and back-propagates the
    teachers' gradients through the images into the field. Every ray is sampled, skipped by the
    occupancy `grid` (None: no skipping) and composited exactly as `render_rays` does, so with
    stratified False an image equals `render_image`'s up to float rounding.

    cameras: B cameras of one size H x W. times: B times in [0, 1], or one number for all.
    render_cfg: sampling and compositing (default RenderConfig()). background: None (the
    field's background model, `field.background(dirs)`), one solid colour (3,) for every image,
    one per image (B, 3), or a callable mapping unit ray directions (R, 3) to colours (R, 3);
    colours are RGB in [0, 1] and a tensor that requires grad receives gradients. 4D-fy's random
    solid colours with p = 0.5 come from `random_background`.
    requires_grad: build the autograd graph (False renders under no_grad, as for evaluation).
    stratified: jitter samples inside their bins; each chunk draws its jitter from a seed taken
    from `generator` (a CPU generator; None: torch's global one), so checkpointing recomputes
    the same samples. Unjittered bin centres otherwise (evaluation).

    Memory: the rays of all cameras are rendered in chunks of `chunk` rays (default
    render_cfg.chunk). One chunk needs its dense (chunk, n_samples) sample tensors (about 70
    bytes per slot: 8192 rays of 128 samples, 70 MiB) plus, with autograd, the graph of the
    samples it evaluates (about 0.7 KiB per evaluated sample for 4D-fy's field on the CPU
    kernel: two 32-wide encodings and two 64-wide hidden layers). With checkpoint True (the
    default) a chunk's graph is freed after its forward pass and rebuilt during backward (one
    more field evaluation of the chunk), so what stays held between forward and backward is
    about 50 bytes per ray (its origin, direction and time, and the outputs), O(B * H * W),
    and the peak is that plus one chunk: `chunk` bounds memory. With checkpoint False the
    graph of every evaluated sample stays held until backward, so memory grows with B * H * W
    times the samples a ray evaluates after skipping and early stop, whatever the chunk; that
    saves the recomputation.

    Returns rgb (B, H, W, 3), opacity (B, H, W) (accumulated alpha, sum_i w_i), depth (B, H, W)
    (distance along the unit ray in world units, inf where opacity is 0), distortion
    (B, H, W) (mip-NeRF 360's regulariser), float32 (float64 for a float64 field), and `samples`
    (int), the number of field evaluations.
    """
    render_cfg = render_cfg or RenderConfig()
    if hasattr(cameras, "rays"):
        raise ValueError("cameras: expected a sequence of cameras, got one camera (wrap it in a list, or use render_clip)")
    cameras = list(cameras)
    if not cameras:
        raise ValueError("cameras: need at least one camera")
    h, w = cameras[0].height, cameras[0].width
    sizes = {(c.height, c.width) for c in cameras}
    if len(sizes) > 1:
        raise ValueError(f"cameras: all cameras must have one image size, got {sorted(sizes)} (H, W)")
    time_list = _camera_times(times, len(cameras))
    chunk = render_cfg.chunk if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    device = _field_device(field)
    rays = [camera_rays(c, device) for c in cameras]
    origins = torch.cat([o for o, _ in rays])
    dirs = torch.cat([d for _, d in rays])
    n_pixels = h * w
    ray_times = torch.tensor(time_list, dtype=torch.float32, device=device).repeat_interleave(n_pixels)
    image = torch.arange(len(cameras), device=device).repeat_interleave(n_pixels)

    parts = []
    with torch.set_grad_enabled(requires_grad):
        for start in range(0, origins.shape[0], chunk):
            sl = slice(start, start + chunk)
            bg = _chunk_background(background, dirs[sl], image[sl], len(cameras))
            seed = int(torch.randint(0, 2**62, (), generator=generator)) if stratified else 0
            args = (field, grid, render_cfg, origins[sl], dirs[sl], ray_times[sl], bg, seed, stratified)
            if checkpoint and requires_grad:
                parts.append(torch.utils.checkpoint.checkpoint(_render_chunk, *args, use_reentrant=False))
            else:
                parts.append(_render_chunk(*args))
    b = len(cameras)
    return {
        "rgb": torch.cat([p[0] for p in parts]).reshape(b, h, w, 3),
        "opacity": torch.cat([p[1] for p in parts]).reshape(b, h, w),
        "depth": torch.cat([p[2] for p in parts]).reshape(b, h, w),
        "distortion": torch.cat([p[3] for p in parts]).reshape(b, h, w),
        "samples": int(sum(int(p[4]) for p in parts)),
    }


def render_clip(
    field,
    grid: OccupancyGrid | None,
    camera,
    times,
    render_cfg: RenderConfig | None = None,
    background=None,
    requires_grad: bool = True,
    chunk: int | None = None,
    checkpoint: bool = True,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Render T frames of one camera at times `times` (T values in [0, 1]), as 4D-fy's video
    teacher sees the field: rgb (T, H, W, 3), opacity, depth and distortion (T, H, W), `samples`.

    The same batch as `render_cameras` with the camera repeated (see it for background, chunks,
    memory and checkpointing); gradients reach the dynamic grid unless it is frozen
    (`Field4D.freeze_dynamic`) or its table does not require grad.
    """
    if isinstance(times, (int, float, np.generic)) or (isinstance(times, (torch.Tensor, np.ndarray)) and times.ndim == 0):
        raise ValueError("times: render_clip needs one time per frame (a sequence of T times), got a single number")
    times = list(times.reshape(-1).tolist()) if isinstance(times, (torch.Tensor, np.ndarray)) else list(times)
    if not times:
        raise ValueError("times: render_clip needs at least one frame")
    return render_cameras(
        field, grid, [camera] * len(times), times, render_cfg, background, requires_grad, chunk, checkpoint, stratified, generator
    )


@torch.no_grad()
def render_image(
    field,
    camera,
    time01: float,
    config: RenderConfig | None = None,
    grid: OccupancyGrid | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render one camera at one time in chunks of `config.chunk` rays, without autograd
    (`render_cameras` with one camera).

    Returns rgb (H, W, 3), opacity (H, W), depth (H, W) float32 tensors and `samples` (int).
    """
    config = config or RenderConfig()
    if not 0.0 <= float(time01) <= 1.0:
        raise ValueError(f"time01 must lie in [0, 1], got {time01}")
    out = render_cameras(field, grid, [camera], float(time01), config, background, requires_grad=False)
    return {"rgb": out["rgb"][0], "opacity": out["opacity"][0], "depth": out["depth"][0], "samples": out["samples"]}
