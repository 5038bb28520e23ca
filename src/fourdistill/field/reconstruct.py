"""Fit a 4D field to posed, time-stamped images: the "4D reconstruction model" of 4Distillation.

The loop reads like the method: draw a batch of pixel rays from all training views (each with
its camera and time), render them through the field with the occupancy grid, take the photometric
MSE plus the regularisers of field/losses.py, one Adam step with per-group learning rates,
refresh the occupancy grid on its schedule. The loop, checkpoints, logs, card and the
--resume rule are the engine's (fourdistill.engine); the checkpoint format is
field/checkpoint.py's and carries everything needed to resume bit for bit.

Run layout under `out_dir`:
    config.json                    the ReconstructConfig (compared on --resume)
    checkpoint/field.safetensors   field weights, occupancy grid buffers ("occupancy." prefix)
    checkpoint/field.json          format tag, FieldConfig, RenderConfig, OccupancyConfig, orbit, step, wall_s
    checkpoint/optimizer.pt        optimizer state
    checkpoint/train_state.pt      step, wall_s, generator states, test-PSNR history, ray count
    checkpoint/README.md           the model card
    log.jsonl, eval.jsonl          {"step", "wall_s", loss / psnr / occupied / rays} and test PSNR rows
    tensorboard/                   the same scalars
    metrics.json                   test-view PSNR / SSIM, PSNR against wall time
    test_views.png                 rendered test views over the ground truth
    video.mp4                      a novel camera path through time
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np
import torch

from ..cameras import Camera, OrbitRange, orbit_camera, spherical_coordinates
from ..engine.cards import card_text, write_card
from ..engine.checkpoint import capture_rng, restore_rng
from ..engine.config import MAY_CHANGE, start_run
from ..engine.loop import Loop, RunLog, check_finite
from ..engine.schedules import exponential_decay
from ..evaluate.metrics import masked_psnr, masked_ssim, psnr, psnr_from_mse, ssim
from ..io import image_grid, save_image, write_json, write_video as _write_video
from ..sources import open_source
from ..sources.base import Source, SourceError
from ..sources.dnerf import DNeRFSource, split_files
from . import losses
from .checkpoint import (
    checkpoint_folder,
    field_metadata,
    load_checkpoint,
    load_training_state,
    orbit_to_dict,
    save_checkpoint,
    step_size,
)
from .field import Field4D, FieldConfig, grid_summary
from .hash_grid import HashGridConfig
from .render import OccupancyConfig, OccupancyGrid, RenderConfig, camera_rays, ray_box, render_image, render_rays


def _small_field() -> FieldConfig:
    """Grids sized for 64^2 scenes on a 2-core CPU (see ReconstructConfig)."""
    return FieldConfig(
        static_grid=HashGridConfig(n_input_dims=3, n_levels=8, n_features_per_level=4, log2_hashmap_size=17, base_resolution=16, per_level_scale=1.219),
        dynamic_grid=HashGridConfig(n_input_dims=4, n_levels=8, n_features_per_level=4, log2_hashmap_size=17, base_resolution=8, per_level_scale=2 ** (1 / 7)),
        time_scale=0.25,
        blob_scale=0.0,
        density_bias=-3.0,
        density_activation="exp",
        background="mlp",
        position_input=True,
    )


def _render() -> RenderConfig:
    """128 samples per ray (see ReconstructConfig)."""
    return RenderConfig(n_samples=128)


def _occupancy() -> OccupancyConfig:
    """8 time bins and a 64-step warm-up (see ReconstructConfig)."""
    return OccupancyConfig(time_bins=8, warmup_steps=64)


@dataclass
class ReconstructConfig:
    """How a field is fitted. The defaults fit a 64^2 D-NeRF scene in minutes on 2 CPU cores;
    the measurements behind each choice are in docs/results/2026-11-reconstruction-experiments.md.

    - field: smaller grids than 4D-fy's (Bahmani et al. 2024; sized for 256^2 renders on an
      80 GB GPU): 8 levels x 4 features (still 32 dims, so 4D-fy's 32 -> 64 MLPs stay) on a
      2^17 table; static finest 64 (about a pixel per cell of a 64^2 view), dynamic finest 16
      (it only carries what moves, and cannot fit each frame's single view); the dynamic time
      axis at a quarter of the spatial resolution (time_scale 0.25) so neighbouring frames share
      cells; the MLPs also read the point's coordinates (position_input).
    - density: no centre bias (blob_scale 0: a prior for generation from text), density_bias -3
      so the box starts nearly empty and the occupancy grid skips early, Instant-NGP's exp
      activation (Müller et al. 2022).
    - render: 128 samples per ray, steps under a pixel of a 64^2 view.
    - learning rates: 4D-fy's are grids 1e-2, MLPs 1e-3; here grids 2e-2 and MLPs 1e-2 (as
      Instant-NGP's), both decaying exponentially to lr_final_ratio; Adam betas (0.9, 0.99) and
      eps 1e-15 are Instant-NGP's for hash grids.
    - mask_weight: binary cross-entropy between opacity and mask where the source gives masks
      (our choice; it keeps pushing opacity towards 1 on the subject).
    - distortion_weight: mip-NeRF 360's distortion loss (Barron et al. 2022), weight 0.01 as there.
    - sparsity_weight / sparsity_points: Plenoxels' Cauchy sparsity log(1 + 2 sigma^2) at random
      points and times (Fridovich-Keil et al. 2022; our weight): it removes fog nothing asks for.
    - static_steps: the dynamic grid is frozen for the first steps, as in 4D-fy's static stages.
    - time_smoothness_weight / time_smoothness_delta: K-Planes' temporal smoothness
      (Fridovich-Keil et al. 2023) as a sampled penalty ||f_dyn(x, t + delta) - f_dyn(x, t)||^2.
    - train_early_stop_eps: transmittance at which training rays stop (evaluation renders use
      render.early_stop_eps).
    - background: "auto" uses a solid background of the source's compositing colour when the
      source composited RGBA over a known colour (a D-NeRF folder), else the MLP background.
    - checkpoint_every / eval_every / log_every: steps between checkpoints, test-view
      evaluations and log rows; these, steps and the video settings may change on --resume.
    - holdout_every: for sources without a test split, every k-th frame is held out for testing.
    - samples_per_step / max_rays_per_step: as Instant-NGP, each step evaluates about a fixed
      number of samples and the number of rays adapts, so a step costs about the same throughout.
    """

    steps: int = 1500
    samples_per_step: int = 131072
    max_rays_per_step: int = 8192
    lr_grid: float = 2e-2  # 4D-fy: grids 1e-2; see the docstring
    lr_mlp: float = 1e-2
    lr_final_ratio: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.99)  # Instant-NGP
    adam_eps: float = 1e-15  # Instant-NGP
    mask_weight: float = 0.1
    distortion_weight: float = 0.01
    sparsity_weight: float = 1e-3
    sparsity_points: int = 4096
    time_smoothness_weight: float = 0.0
    time_smoothness_delta: float = 0.05
    static_steps: int = 300
    train_early_stop_eps: float = 1e-2
    background: str = "auto"
    field: FieldConfig = dataclass_field(default_factory=_small_field)
    render: RenderConfig = dataclass_field(default_factory=_render)
    occupancy: OccupancyConfig = dataclass_field(default_factory=_occupancy)
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 500
    log_every: int = 10
    holdout_every: int = 8
    video_frames: int = 48
    video_fps: int = 24

    def __post_init__(self):
        if self.steps < 0 or self.samples_per_step < 1 or self.max_rays_per_step < 1:
            raise ValueError("ReconstructConfig: steps must be >= 0, samples_per_step and max_rays_per_step >= 1")
        if self.background not in ("auto", "mlp", "solid"):
            raise ValueError(f"ReconstructConfig.background must be auto, mlp or solid, got {self.background!r}")
        if self.holdout_every < 2:
            raise ValueError("ReconstructConfig.holdout_every must be >= 2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- views
@dataclass
class Views:
    """Images with cameras and times, ready for ray sampling.

    rgb (N, H, W, 3) float32; mask (N, H, W) or None; times (N,); cameras, files: N each.
    """

    rgb: torch.Tensor
    mask: torch.Tensor | None
    times: torch.Tensor
    cameras: list[Camera]
    files: list[str]

    def __len__(self) -> int:
        return len(self.cameras)

    def rays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All pixel rays: origins (N*H*W, 3), dirs (N*H*W, 3), times (N*H*W,)."""
        os_, ds_ = zip(*(camera_rays(c) for c in self.cameras))
        h, w = self.rgb.shape[1:3]
        return torch.cat(os_), torch.cat(ds_), self.times.repeat_interleave(h * w)


def load_views(source: Source, indices, bound: float = 1.0) -> Views:
    """Decode frames `indices` of `source` and check what fitting needs.

    Every frame needs a camera, a time in [0, 1], a non-empty image matching its camera, and a
    camera that sees the scene box [-bound, bound]^3; otherwise SourceError names the frame.
    """
    infos = source.infos()
    rgbs, masks, times, cameras, files = [], [], [], [], []
    for i in indices:
        info = infos[i]
        where = info.file or f"{source.name or source.kind} frame {i}"
        if info.camera is None:
            raise SourceError(where, "frame has no camera pose: fitting a field needs posed frames (a video alone is not enough)", "transform_matrix")
        frame = source.frame(i)
        rgb = np.asarray(frame.rgb, dtype=np.float32)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise SourceError(where, f"image has shape {rgb.shape}; fitting needs a non-empty (H, W, 3) image")
        cam = frame.camera or info.camera
        if (cam.width, cam.height) != (rgb.shape[1], rgb.shape[0]):
            raise SourceError(where, f"image is {rgb.shape[1]}x{rgb.shape[0]} but its camera is {cam.width}x{cam.height}")
        if rgbs and rgb.shape != rgbs[0].shape:
            raise SourceError(where, f"image is {rgb.shape[1]}x{rgb.shape[0]} but the first is {rgbs[0].shape[1]}x{rgbs[0].shape[0]}: all views must share one size")
        t = float(frame.time01)
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise SourceError(where, f"time {t} is outside [0, 1]", "time")
        o, d = camera_rays(cam)
        near, far = ray_box(o, d, bound)
        if not bool((far > near.clamp(min=0.0)).any()):
            c = cam.position
            raise SourceError(
                where,
                f"the camera at ({c[0]:.3g}, {c[1]:.3g}, {c[2]:.3g}) sees none of the scene box [-{bound:g}, {bound:g}]^3: "
                "poses must be in the box's world units and look at it (OpenGL axes, camera looks down -z)",
                "transform_matrix",
            )
        rgbs.append(rgb)
        if frame.mask is not None:
            masks.append(np.asarray(frame.mask, dtype=np.float32))
        times.append(t)
        cameras.append(cam)
        files.append(str(info.file) if info.file else f"frame {i}")
    if not rgbs:
        raise SourceError(source.name or source.kind, "no frames to fit")
    mask = torch.from_numpy(np.stack(masks)) if len(masks) == len(rgbs) else None
    return Views(torch.from_numpy(np.stack(rgbs)), mask, torch.tensor(times, dtype=torch.float32), cameras, files)


def open_for_reconstruction(path, holdout_every: int = 8, background=(1.0, 1.0, 1.0)) -> tuple[Source, list[int], Source | None, list[int]]:
    """(train source, train indices, test source, test indices) for a path.

    A D-NeRF folder gives its train split and its test split (val when there is no test). Any
    other source gives every frame but each `holdout_every`-th, which are held out for testing.
    """
    splits = split_files(Path(path)) if not str(path).startswith("world:") and Path(path).is_dir() else {}
    if "train" in splits:
        train = DNeRFSource(path, "train", background=background)
        held = "test" if "test" in splits else ("val" if "val" in splits else None)
        test = DNeRFSource(path, held, background=background) if held else None
        return train, list(range(len(train))), test, list(range(len(test))) if test else []
    source = open_source(path)
    n = len(source)
    test_idx = list(range(holdout_every - 1, n, holdout_every)) if n >= holdout_every else []
    train_idx = [i for i in range(n) if i not in set(test_idx)]
    return source, train_idx, (source if test_idx else None), test_idx


def orbit_of(cameras: list[Camera]) -> OrbitRange:
    """The orbit the training cameras span (about the origin), for drawing new views later."""
    sph = np.array([spherical_coordinates(c.c2w) for c in cameras])
    az = sph[:, 0]
    # azimuths spread over more than half the circle: take the full circle
    az_range = (-180.0, 180.0) if np.ptp(az) > 180.0 else (float(az.min()), float(az.max()))
    return OrbitRange(
        azimuth_deg=az_range,
        elevation_deg=(float(sph[:, 1].min()), float(sph[:, 1].max())),
        radius=(float(sph[:, 2].min()), float(sph[:, 2].max())),
        fov_x_deg=float(cameras[0].fov_x_deg),
    )


def novel_path(orbit: OrbitRange, n_frames: int, width: int, height: int) -> tuple[list[Camera], np.ndarray]:
    """A camera circling once at the orbit's middle elevation and radius while t runs 0 -> 1."""
    el = float(np.mean(orbit.elevation_deg))
    r = float(np.mean(orbit.radius))
    az = np.linspace(-180.0, 180.0, n_frames, endpoint=False) + 15.0
    cams = [orbit_camera(a, el, r, orbit.fov_x_deg, width, height, orbit.target) for a in az]
    return cams, np.linspace(0.0, 1.0, n_frames)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def render_views(field, grid, cameras, times, render: RenderConfig, background=None) -> dict[str, torch.Tensor]:
    """Render cameras at times: rgb (N, H, W, 3), opacity (N, H, W), depth (N, H, W)."""
    outs = [render_image(field, c, float(t), render, grid, background) for c, t in zip(cameras, times)]
    return {k: torch.stack([o[k] for o in outs]) for k in ("rgb", "opacity", "depth")}


def evaluate(field, grid, views: Views, render: RenderConfig, background=None) -> dict:
    """Test-view PSNR and SSIM (masked too, where masks exist), per view and mean."""
    out = render_views(field, grid, views.cameras, views.times.tolist(), render, background)
    pred = out["rgb"].permute(0, 3, 1, 2).clamp(0, 1)
    true = views.rgb.permute(0, 3, 1, 2)
    result = {"psnr": psnr(pred, true).tolist()}
    small = min(pred.shape[-2:]) < 11
    result["ssim"] = [math.nan] * len(views) if small else ssim(pred, true).tolist()
    if views.mask is not None and bool((views.mask > 0).any()):
        result["masked_psnr"] = masked_psnr(pred, true, views.mask).tolist()
        result["masked_ssim"] = [math.nan] * len(views) if small else masked_ssim(pred, true, views.mask).tolist()
    result["mean"] = {k: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else math.nan for k, v in list(result.items())}
    result["renders"] = out["rgb"]
    return result


# ----------------------------------------------------------------------------- training
def make_optimizer(field: Field4D, cfg: ReconstructConfig) -> torch.optim.Adam:
    """Adam with one group per role (4D-fy: grids 1e-2, MLPs 1e-3; see ReconstructConfig)."""
    groups = field.parameter_groups()
    param_groups = [
        {"params": groups["static_grid"], "lr": cfg.lr_grid, "name": "static_grid", "base_lr": cfg.lr_grid},
        {"params": groups["mlp"], "lr": cfg.lr_mlp, "name": "mlp", "base_lr": cfg.lr_mlp},
    ]
    if groups["dynamic_grid"]:
        param_groups.insert(1, {"params": groups["dynamic_grid"], "lr": cfg.lr_grid, "name": "dynamic_grid", "base_lr": cfg.lr_grid})
    # fused: one kernel per step over the whole table (the grids' tables are most of the parameters)
    return torch.optim.Adam(param_groups, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=True)


def reconstruct(
    train: Source,
    out_dir,
    config: ReconstructConfig | None = None,
    train_indices=None,
    test: Source | None = None,
    test_indices=None,
    resume: bool = False,
    progress: bool = True,
    write_video: bool = True,
    log=print,
    stop_at: int | None = None,
    tensorboard: bool = True,
    command: str | None = None,
) -> dict:
    """Fit a field to `train` (frames `train_indices`, default all) and write the run to `out_dir`.

    Returns the metrics dict also written to metrics.json. The --resume rule of the engine:
    with `resume`, training continues from out_dir/checkpoint up to `config.steps` and every
    setting but the step counts and intervals must be the saved run's; without it a folder
    holding a run is an error. stop_at: checkpoint and return after this step, as an
    interruption would (the schedule still runs to `config.steps`; resume to finish).
    command: the command line, for the model card.
    """
    cfg = config or ReconstructConfig()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    bound = cfg.field.bound
    train_indices = list(range(len(train))) if train_indices is None else list(train_indices)
    views = load_views(train, train_indices, bound)
    test_views = load_views(test, list(range(len(test))) if test_indices is None else list(test_indices), bound) if test is not None else None

    # static data: one time for every frame -> no dynamic grid, one time bin
    field_cfg, occ_cfg = cfg.field, cfg.occupancy
    distinct_times = len(np.unique(np.round(views.times.numpy(), 6)))
    static_reason = None
    if distinct_times == 1:
        static_reason = f"all {len(views)} training frames have time {float(views.times[0]):.4g}: fitting a static field (no dynamic grid, time is ignored)"
        field_cfg = dataclasses.replace(field_cfg, dynamic=False)
        occ_cfg = dataclasses.replace(occ_cfg, time_bins=1)
        log(static_reason)
    elif not field_cfg.dynamic:
        occ_cfg = dataclasses.replace(occ_cfg, time_bins=1)

    # background: solid in the source's compositing colour when it composited RGBA over one
    source_bg = getattr(train, "background", None)
    use_solid = cfg.background == "solid" or (cfg.background == "auto" and source_bg is not None and views.mask is not None)
    if use_solid:
        color = tuple(float(c) for c in (source_bg if source_bg is not None else field_cfg.background_color))
        field_cfg = dataclasses.replace(field_cfg, background="solid", background_color=color)
    else:
        field_cfg = dataclasses.replace(field_cfg, background="mlp")

    orbit = orbit_of(views.cameras)
    meta = field_metadata(
        field_cfg,
        cfg.render,
        occ_cfg,
        orbit=orbit_to_dict(orbit),
        caption=getattr(train, "caption", None),
        source=getattr(train, "name", "") or train.kind,
        world_seed=getattr(train, "world_seed", None),  # a held-out scene's field is refused as training data
        resolution=[int(views.rgb.shape[2]), int(views.rgb.shape[1])],
        time_range=[float(views.times.min()), float(views.times.max())],
        static_reason=static_reason,
    )

    has_checkpoint = checkpoint_folder(ckpt_dir) is not None
    state = load_training_state(ckpt_dir) if resume and has_checkpoint else None
    start_run(out_dir, cfg, resume, may_change=MAY_CHANGE + ("video_frames", "video_fps"), saved=state.extra.get("config") if state else None, command=command)

    generator = torch.Generator().manual_seed(cfg.seed)
    field = Field4D(field_cfg)
    grid = OccupancyGrid(occ_cfg, bound, step_size(bound, cfg.render))
    optimizer = make_optimizer(field, cfg)
    start_step, history, wall_s = 0, [], 0.0
    rays_per_step = max(min(cfg.max_rays_per_step, cfg.samples_per_step // cfg.render.n_samples), 1)

    if state is not None:
        loaded_field, loaded_grid, loaded_meta = load_checkpoint(ckpt_dir)
        wanted = json.loads(json.dumps(meta))
        changed = [k for k in ("field", "render", "occupancy") if loaded_meta[k] != wanted[k]]
        if changed:
            raise ValueError(f"{ckpt_dir}: the checkpoint's {' and '.join(changed)} settings differ from this run's; resume with the same settings")
        field.load_state_dict(loaded_field.state_dict())
        grid.load_state_dict(loaded_grid.state_dict())
        optimizer.load_state_dict(state.optimizer)
        restore_rng(state.rng, {"train": generator})
        start_step, wall_s = state.step, state.wall_s
        history = [_wall_key(h) for h in state.extra.get("history", [])]
        rays_per_step = int(state.extra["rays_per_step"])
        log(f"resuming from step {start_step} ({wall_s:.0f} s of training so far)")

    origins, dirs, times = views.rays()
    target = views.rgb.reshape(-1, 3)
    mask = views.mask.reshape(-1) if views.mask is not None else None
    bg = field.background_color if field_cfg.background == "solid" else None
    n_rays = origins.shape[0]
    log(
        f"fitting {len(views)} views {views.rgb.shape[2]}x{views.rgb.shape[1]}, {distinct_times} distinct times; "
        f"static grid {grid_summary(field_cfg.static_grid)}"
        + (f"; dynamic grid {grid_summary(field_cfg.dynamic_grid)}" if field_cfg.dynamic else "")
        + f"; background {field_cfg.background}"
    )

    def save(done: int) -> None:
        save_checkpoint(
            ckpt_dir, field, grid, {**meta, "step": done}, step=done, wall_s=loop.wall_s,
            optimizer=optimizer.state_dict(), rng=capture_rng({"train": generator}),
            extra={"history": history, "rays_per_step": rays_per_step},
        )

    run_log = RunLog(out_dir, main="log", tensorboard=tensorboard)
    run_log.truncate(start_step)
    loop = Loop(cfg.steps, start_step=start_step, wall_s=wall_s, desc="reconstruct", progress=progress, log=run_log,
                save=save, save_every=cfg.checkpoint_every, stop_at=stop_at)
    train_render = dataclasses.replace(cfg.render, early_stop_eps=cfg.train_early_stop_eps)
    psnr_ema = None
    for step in loop:
        field.train()
        if field.is_dynamic:
            field.freeze_dynamic(step < cfg.static_steps)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * exponential_decay(step, cfg.steps, cfg.lr_final_ratio)
        idx = torch.randint(0, n_rays, (rays_per_step,), generator=generator)
        out = render_rays(field, origins[idx], dirs[idx], times[idx], train_render, grid, bg, generator, stratified=True)
        mse = losses.photometric_mse(out["rgb"], target[idx])
        loss = mse
        if mask is not None and cfg.mask_weight > 0:
            loss = loss + cfg.mask_weight * losses.mask_bce(out["opacity"], mask[idx])
        if cfg.distortion_weight > 0:
            loss = loss + cfg.distortion_weight * losses.distortion(out["distortion"])
        if cfg.sparsity_weight > 0:  # at random points of the box and times
            points = (torch.rand(cfg.sparsity_points, 3, generator=generator) * 2.0 - 1.0) * bound
            point_times = torch.rand(cfg.sparsity_points, generator=generator)
            loss = loss + cfg.sparsity_weight * losses.cauchy_sparsity(field.density(points, point_times))
        if cfg.time_smoothness_weight > 0 and field.is_dynamic and not field.dynamic_frozen:
            points = (torch.rand(cfg.sparsity_points, 3, generator=generator) * 2.0 - 1.0) * bound
            t0 = torch.rand(cfg.sparsity_points, generator=generator) * (1.0 - cfg.time_smoothness_delta)
            f0 = field.dynamic_features(points, t0)
            f1 = field.dynamic_features(points, t0 + cfg.time_smoothness_delta)
            loss = loss + cfg.time_smoothness_weight * losses.time_smoothness(f0, f1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Instant-NGP: adapt the ray count so the next step evaluates about samples_per_step samples
        rays_per_step = int(min(max(rays_per_step * cfg.samples_per_step / max(int(out["samples"]), 1), 64), cfg.max_rays_per_step))
        field.eval()
        grid.refresh(field, step, generator)

        done = step + 1
        loss_value, p = float(loss.detach()), psnr_from_mse(float(mse.detach()), min_mse=1e-12)
        check_finite(done, loss=loss_value)
        psnr_ema = p if psnr_ema is None else 0.9 * psnr_ema + 0.1 * p
        shown = dict(psnr=f"{psnr_ema:.2f}", occupied=f"{grid.occupied_fraction:.3f}", rays=len(idx))
        loop.set_postfix(**shown)
        if loop.due(cfg.log_every, done):
            loop.log(done, postfix=shown, loss=loss_value, psnr=p, occupied=grid.occupied_fraction, rays=len(idx))
        if test_views is not None and loop.due(cfg.eval_every, done) and done < cfg.steps:
            with loop.paused():
                ev = evaluate(field, grid, test_views, cfg.render, bg)
                row = run_log.write(done, loop.wall_s, "eval", train_psnr=round(psnr_ema, 3), test_psnr=ev["mean"]["psnr"])
                history.append(row)
                loop.write(f"step {done}: test PSNR {ev['mean']['psnr']:.2f} dB after {loop.wall_s:.0f} s of training", log)
    if loop.stopped:
        run_log.close()
        return {"steps": loop.step, "stopped": True, "wall_s": round(loop.wall_s, 2), "history": history}

    wall_s = loop.wall_s
    metrics = {"steps": cfg.steps, "wall_s": round(wall_s, 2), "train_views": len(views), "static": static_reason is not None}
    if static_reason:
        metrics["static_reason"] = static_reason
    if test_views is not None:
        ev = evaluate(field, grid, test_views, cfg.render, bg)
        history.append(run_log.write(cfg.steps, wall_s, "eval", train_psnr=round(psnr_ema or 0.0, 3), test_psnr=ev["mean"]["psnr"]))
        metrics["test"] = {k: v for k, v in ev.items() if k != "renders"}
        metrics["test_views"] = len(test_views)
        _write_comparison(out_dir / "test_views.png", ev["renders"], test_views.rgb)
        log(
            f"test views: PSNR {ev['mean']['psnr']:.2f} dB, SSIM {ev['mean']['ssim']:.4f}"
            + (f" (masked PSNR {ev['mean']['masked_psnr']:.2f} dB)" if "masked_psnr" in ev["mean"] else "")
        )
    run_log.close()
    metrics["history"] = history
    if write_video and cfg.video_frames > 0:
        h, w = views.rgb.shape[1:3]
        cams, ts = novel_path(orbit, cfg.video_frames, w, h)
        frames = render_views(field, grid, cams, ts, cfg.render, bg)["rgb"].numpy()
        _write_video(out_dir / "video.mp4", frames, fps=cfg.video_fps)
        metrics["video"] = "video.mp4"
    write_json(out_dir / "metrics.json", _json_safe(metrics))
    write_field_card(ckpt_dir, cfg, meta, metrics, command)
    return metrics


def _wall_key(row: dict) -> dict:
    """A history row with its wall time under "wall_s" (runs before the engine wrote "train_s")."""
    row = dict(row)
    if "train_s" in row:
        row["wall_s"] = row.pop("train_s")
    return row


def write_field_card(folder, cfg: ReconstructConfig, meta: dict, metrics: dict, command: str | None = None):
    """README.md of a fitted field: source, views, steps, wall time and the test views' scores."""
    numbers = []
    if "test" in metrics:
        mean = metrics["test"]["mean"]
        numbers.append(f"test views ({metrics['test_views']}): PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f}"
                       + (f", masked PSNR {mean['masked_psnr']:.2f} dB" if "masked_psnr" in mean else ""))
    numbers += [f"step {h['step']}: test PSNR {h['test_psnr']:.2f} dB after {h['wall_s']:.0f} s" for h in metrics.get("history", [])]
    w, h = meta["resolution"]
    text = card_text(
        "4D field",
        f"A static + dynamic hash-grid field fitted to `{meta.get('source')}`"
        + (f" (\"{meta['caption']}\")" if meta.get("caption") else "")
        + ". It is a 4D source: `fourdistill inspect FOLDER`, `fourdistill distill --source FOLDER`, "
        "or `fourdistill.field.source.FieldSource(FOLDER)` in Python.",
        command=command,
        default_command="fourdistill reconstruct (library call)",
        training=[
            f"{metrics['train_views']} training views {w}x{h}, times {meta['time_range'][0]:.3g} to {meta['time_range'][1]:.3g}"
            + (f"; {metrics['static_reason']}" if metrics.get("static_reason") else ""),
            f"{metrics['steps']} steps, seed {cfg.seed}, background {meta['field']['background']}",
        ],
        steps=metrics["steps"],
        wall_s=metrics["wall_s"],
        device="cpu",
        numbers=numbers,
        config=cfg.to_dict(),
    )
    return write_card(folder, text)

def _write_comparison(path: Path, pred: torch.Tensor, true: torch.Tensor) -> None:
    """Rows of rendered test views over their ground truth: (N, H, W, 3) each."""
    n = min(len(pred), 10)
    images = torch.cat([pred[:n].clamp(0, 1), true[:n]]).numpy()
    save_image(path, image_grid(images, rows=2))


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
