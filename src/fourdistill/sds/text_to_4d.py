"""`generate_4d`: a caption to a 4D field by the 4D-fy recipe (sds/recipe.py), on the engine.

Run layout under OUT:
    config.json                       the TextTo4DConfig (compared on --resume)
    log.jsonl, tensorboard/           {step, wall_s, stage, teacher, loss, loss_<teacher>, <regularisers>}
    checkpoint/                       a field checkpoint (field.safetensors, field.json, optimizer.pt,
                                      train_state.pt): `fourdistill inspect OUT` and
                                      `fourdistill distill --source OUT` read it
    previews/step_NNNNNN.png          every preview_every steps: an orbit strip at t = 0.5 over a
                                      time strip at azimuth 0
    orbit.mp4                         the end: an orbit at several times
    grid.png                          the end: a time x view grid
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np
import torch

from ..diffusion.schedule import TimestepAnnealing
from ..field.field import FieldConfig
from ..field.hash_grid import HashGridConfig
from ..field.render import OccupancyConfig, RenderConfig
from .image import VSDConfig
from .multiview import MultiViewSDSConfig
from .recipe import CameraConfig, Regularisers, StageConfig, embedded_stages
from .video import VideoSDSConfig

CHECKPOINT_DIR = "checkpoint"


def _field() -> FieldConfig:
    """A field sized for 32^2 renders on a 2-core CPU: 4D-fy's layout (static 3D + dynamic 4D hash
    grids, 32-wide features, 64-wide MLPs) with 8 levels of 4 features on 2^16 tables."""
    return FieldConfig(
        static_grid=HashGridConfig(n_input_dims=3, n_levels=8, n_features_per_level=4, log2_hashmap_size=16, base_resolution=8, per_level_scale=1.3),
        dynamic_grid=HashGridConfig(n_input_dims=4, n_levels=8, n_features_per_level=4, log2_hashmap_size=16, base_resolution=4, per_level_scale=1.25),
        time_scale=0.5,
        blob_scale=10.0,  # 4D-fy / Magic3D's centre bias: a generated scene starts as a blob
        blob_radius=0.5,
        density_activation="softplus",
        background="mlp",
        position_input=True,
    )


def _annealed(steps: int) -> TimestepAnnealing:
    """t in [0.02, t_max], t_max falling linearly 0.98 -> 0.5 over `steps` (4D-fy's multi-view range)."""
    return TimestepAnnealing(t_min=(0.02, 0.02), t_max=(0.98, 0.5), steps=steps)


@dataclass
class TextTo4DConfig:
    """Everything a text-to-4D run uses (configs/text_to_4d/embedded.yaml and fourdfy-paper.yaml).

    Teachers: "embedded" or a folder / hub id each (image: a Stable Diffusion stack; multiview:
    an MVDream-layout teacher or MVDream's original file; video: a motion adapter or a Zeroscope
    folder). Resolutions: `render_resolution` pixels rendered, resized to each teacher's own before
    its VAE (4D-fy renders smaller than its teachers and upsamples). `video.vae_grad_frames`:
    frames back-propagated through the VAE (the others encoded without autograd; 4D-fy's
    low_ram_vae). `image_loss` "sds" uses `image`'s guidance scale and timesteps without the LoRA.
    `loss_weights`: per teacher (4D-fy: video 0.1, the others 1).
    """

    caption: str = ""
    image_teacher: str = "embedded"
    multiview_teacher: str = "embedded"
    video_teacher: str = "embedded"
    stages: list[StageConfig] = dataclass_field(default_factory=embedded_stages)
    # the embedded preset: guidance 10 for every teacher (the tiny teachers saturate colours at
    # 4D-fy's 50 / 100), each stage's max t annealed 0.98 -> 0.5 as 4D-fy's multi-view schedule
    # the embedded teachers' losses are taken in pixels (core.image_space_loss): through their tiny
    # VAE's encoder the latent gradient casts the scene green / magenta (docs/results/2026-12-03-colour-cast.md)
    image: VSDConfig = dataclass_field(default_factory=lambda: VSDConfig(guidance_scale=10.0, timesteps=_annealed(200), loss_space="image"))
    image_loss: str = "sds"  # "sds" (DreamFusion; the embedded default, no LoRA step) or "vsd" (4D-fy, ProlificDreamer)
    multiview: MultiViewSDSConfig = dataclass_field(default_factory=lambda: MultiViewSDSConfig(guidance_scale=10.0, timesteps=_annealed(300), loss_space="image"))
    video: VideoSDSConfig = dataclass_field(default_factory=lambda: VideoSDSConfig(guidance_scale=10.0, loss_space="image"))
    loss_weights: dict = dataclass_field(default_factory=lambda: {"multiview": 1.0, "image": 1.0, "video": 0.1})
    camera: CameraConfig = dataclass_field(default_factory=CameraConfig)
    field: FieldConfig = dataclass_field(default_factory=_field)
    render: RenderConfig = dataclass_field(default_factory=lambda: RenderConfig(n_samples=48))
    occupancy: OccupancyConfig = dataclass_field(default_factory=lambda: OccupancyConfig(resolution=32, time_bins=4, warmup_steps=64))
    regularisers: Regularisers = dataclass_field(default_factory=Regularisers)
    render_resolution: int = 32
    n_frames: int = 8  # 4D-fy: 16
    background_p: float = 0.0  # random solid backgrounds (4D-fy: 0.5; the world's teachers always saw a sky)
    lora_lr: float = 1e-3  # VSD's LoRA (ProlificDreamer: 1e-3)
    grad_clip: float | None = None  # on the field's gradient norm
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 100
    preview_every: int = 100
    orbit_times: tuple[float, ...] = (0.0, 0.33, 0.67, 1.0)

    def __post_init__(self):
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        unknown = set(self.loss_weights) - {"multiview", "image", "video"}
        if unknown:
            raise ValueError(f"loss_weights: unknown teacher {sorted(unknown)[0]!r} (multiview, image, video)")
        if self.image_loss not in ("vsd", "sds"):
            raise ValueError(f"image_loss must be 'vsd' or 'sds', got {self.image_loss!r}")
        if self.n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {self.n_frames}")
        if self.render_resolution < 8:
            raise ValueError(f"render_resolution must be >= 8, got {self.render_resolution}")
        if not 0.0 <= self.background_p <= 1.0:
            raise ValueError(f"background_p must lie in [0, 1], got {self.background_p}")

    @property
    def uses(self) -> set[str]:
        """The teachers some stage draws."""
        out = set()
        for s in self.stages:
            out |= {t for t, p in zip(("multiview", "image", "video"), (s.p_multiview, s.p_image, s.p_video)) if p > 0}
        return out


class Teachers:
    """The guidance objects a run uses and their cached prompts."""

    def __init__(self, cfg: TextTo4DConfig):
        import functools

        from ..teachers.load import load_teacher
        from ..teachers.parts import load_base_parts
        from ..teachers.video.load import predict as video_predict
        from .image import ImageSDS, ImageVSD, ImageSDSConfig
        from .multiview import MultiViewSDS
        from .video import VideoSDS

        self.guidance, self.prompts, self.lora_optimizer = {}, {}, None
        uses = cfg.uses
        tokenizer = None
        if "image" in uses:
            parts = load_base_parts(cfg.image_teacher)
            if cfg.image_loss == "vsd":
                g = ImageVSD(parts, cfg.image)
                self.lora_optimizer = torch.optim.AdamW(g.lora_parameters(), lr=cfg.lora_lr)
            else:
                fields = {k: getattr(cfg.image, k) for k in ImageSDSConfig.__dataclass_fields__}
                g = ImageSDS(parts, ImageSDSConfig(**fields))
            self.guidance["image"] = g
            tokenizer = parts.tokenizer
        if "multiview" in uses:
            teacher = load_teacher("multiview", None if cfg.multiview_teacher == "embedded" else cfg.multiview_teacher)
            self.guidance["multiview"] = MultiViewSDS(teacher, cfg.multiview)
            tokenizer = tokenizer or teacher.parts.tokenizer
        if "video" in uses:
            teacher = load_teacher("video", None if cfg.video_teacher == "embedded" else cfg.video_teacher)
            self.guidance["video"] = VideoSDS(teacher, functools.partial(video_predict, teacher), cfg.video)
            tokenizer = tokenizer or teacher.tokenizer
        self.tokenizer = tokenizer
        for name, g in self.guidance.items():
            self.prompts[name] = g.prompts([cfg.caption])  # the video teacher's negative prompt is its config's


def unknown_words(caption: str, tokenizer) -> list[str]:
    """Words of `caption` the tokenizer splits into pieces (it has not seen them whole)."""
    vocab = tokenizer.get_vocab()
    return [w for w in caption.lower().replace(",", " ").split() if f"{w}</w>" not in vocab]


def check_caption(caption: str, tokenizer=None) -> None:
    """ValueError for an empty caption; a warning naming the words the teachers' tokenizer does
    not know whole (they reach the teachers as pieces, which a small text encoder reads poorly)."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError('caption: empty (give one, e.g. "a red cube spinning next to a blue ball")')
    if tokenizer is not None:
        unknown = unknown_words(caption, tokenizer)
        if unknown:
            warnings.warn(f"caption: the teachers' tokenizer does not know {', '.join(repr(w) for w in unknown)} "
                          "(they are split into pieces; the embedded teachers know the world's words)", stacklevel=2)


def _render(field, grid, cfg: TextTo4DConfig, cameras, times, gen, requires_grad=True):
    from ..field.render import random_background, render_cameras

    background = random_background(len(cameras), cfg.background_p, gen) if cfg.background_p > 0 else None
    return render_cameras(field, grid, cameras, list(times), cfg.render, background=background, requires_grad=requires_grad,
                          stratified=requires_grad, generator=gen)


def teacher_step(teachers: Teachers, teacher: str, field, grid, cfg: TextTo4DConfig, stage, stage_step: int,
                 np_rng: np.random.Generator, gen: torch.Generator):
    """Render what `teacher` looks at and take its score-distillation loss: (weighted loss,
    {"loss_<teacher>": value}, the rendered opacity for the regularisers, the guidance's dict)."""
    from ..teachers.data import clip_times
    from .recipe import sample_cameras

    res = cfg.render_resolution
    g = teachers.guidance[teacher]
    prompts = teachers.prompts[teacher]
    if teacher == "video":
        cam = sample_cameras(cfg.camera, np_rng, 1, res)[0]
        times = clip_times(np_rng, cfg.n_frames)
        out = _render(field, grid, cfg, [cam] * cfg.n_frames, times, gen)
        result = g(out["rgb"][None], prompts, step=stage_step, generator=gen)
    else:
        n_views = 4 if teacher == "multiview" else 1
        cams = sample_cameras(cfg.camera, np_rng, n_views, res)
        t = float(np_rng.uniform(0, 1)) if stage.dynamic else 0.5
        out = _render(field, grid, cfg, cams, [t] * n_views, gen)
        c2w = torch.from_numpy(np.stack([c.c2w for c in cams]).astype(np.float32))[None]
        if teacher == "multiview":
            result = g(out["rgb"][None], prompts, c2w, step=stage_step, generator=gen)
        elif hasattr(g, "lora_parameters"):  # VSD: its LoRA is conditioned on the camera and trains on the latents
            latents = g.encode(out["rgb"], gen)
            result = {**g.latent_loss(latents, prompts, c2w[0], step=stage_step, generator=gen), "latents": latents, "cameras": c2w[0]}
            if g.config.loss_space == "image":
                result = g.in_pixels(out["rgb"], result)
        else:
            result = g(out["rgb"], prompts, step=stage_step, generator=gen)
    weight = float(cfg.loss_weights.get(teacher, 1.0))
    info = {f"loss_{teacher}": float(result["loss"].detach())}
    return weight * result["loss"], info, out["opacity"], result


def generate_4d(out, cfg: TextTo4DConfig, resume: bool = False, progress: bool = True, command: str | None = None,
                on_preview=None) -> Path:
    """Run the recipe for `cfg.caption` into the run folder `out`; returns OUT/checkpoint.

    on_preview(path): called with each preview PNG written (the CLI prints it)."""
    from ..engine import config as engine_config
    from ..engine.checkpoint import capture_rng
    from ..engine.loop import Loop, RunLog, step_generators
    from ..engine.run import set_threads
    from ..cameras import OrbitRange
    from ..field.checkpoint import (checkpoint_folder, field_metadata, load_checkpoint, load_training_state, orbit_to_dict,
                                    save_checkpoint, step_size)
    from ..field.field import Field4D
    from ..field.render import OccupancyGrid
    from .recipe import draw_teacher, field_optimizer, regulariser_losses, set_stage, stage_at, total_steps

    check_caption(cfg.caption)
    out = Path(out)
    engine_config.start_run(out, cfg, resume, command=command)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teachers = Teachers(cfg)
    check_caption(cfg.caption, teachers.tokenizer)
    ckpt_dir = out / CHECKPOINT_DIR
    start_step, wall_s = 0, 0.0
    if resume and checkpoint_folder(ckpt_dir) is not None:
        field, grid, _ = load_checkpoint(ckpt_dir)
        optimizer = field_optimizer(field)
        state = load_training_state(ckpt_dir)
        optimizer.load_state_dict(state.optimizer)
        start_step, wall_s = state.step, state.wall_s
        if teachers.lora_optimizer is not None and "lora" in state.extra:
            teachers.guidance["image"].lora_unet.load_state_dict(state.extra["lora"], strict=False)
            teachers.lora_optimizer.load_state_dict(state.extra["lora_optimizer"])
    else:
        field = Field4D(cfg.field)
        grid = OccupancyGrid(cfg.occupancy, field.bound, step_size(field.bound, cfg.render))
        optimizer = field_optimizer(field)
    stages = cfg.stages
    steps = total_steps(stages)
    log = RunLog(out, main="log")
    log.truncate(start_step)
    meta_extra = dict(caption=cfg.caption, source="text-to-4d", resolution=[cfg.render_resolution, cfg.render_resolution],
                      orbit=orbit_to_dict(OrbitRange(cfg.camera.azimuth_deg, cfg.camera.elevation_deg, cfg.camera.radius,
                                                     float(np.mean(cfg.camera.fov_deg)))))

    def save(done: int) -> None:
        si, k = stage_at(stages, max(done - 1, 0)) if done else (0, 0)
        extra = {"stage": stages[si].name, "stage_step": k + (1 if done else 0)}
        if teachers.lora_optimizer is not None:
            extra["lora"] = {n: p.detach().clone() for n, p in teachers.guidance["image"].lora_unet.named_parameters() if p.requires_grad}
            extra["lora_optimizer"] = teachers.lora_optimizer.state_dict()
        meta = field_metadata(cfg.field, cfg.render, cfg.occupancy, step=done, **meta_extra)
        save_checkpoint(ckpt_dir, field, grid, meta, step=done, wall_s=loop.wall_s, optimizer=optimizer.state_dict(),
                        rng=capture_rng(), extra=extra)

    loop = Loop(steps, start_step=start_step, wall_s=wall_s, desc="text-to-4d", progress=progress, log=log, save=save,
                save_every=cfg.checkpoint_every)
    last: dict[str, float] = {}
    for step in loop:
        np_rng, gen = step_generators(cfg.seed, step)
        si, k = stage_at(stages, step)
        stage = stages[si]
        teacher = draw_teacher(stage, np_rng)
        set_stage(field, optimizer, stage, teacher)
        field.train()
        loss, info, opacity, result = teacher_step(teachers, teacher, field, grid, cfg, stage, k, np_rng, gen)
        regs = regulariser_losses(opacity, cfg.regularisers, step)
        total = loss + sum(regs.values()) if regs else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        if teacher == "image" and teachers.lora_optimizer is not None:
            lora_loss = teachers.guidance["image"].lora_loss(result["latents"].detach(), teachers.prompts["image"], result["cameras"], generator=gen)
            teachers.lora_optimizer.zero_grad(set_to_none=True)
            lora_loss.backward()
            teachers.lora_optimizer.step()
            info["loss_lora"] = float(lora_loss.detach())
        field.eval()
        grid.refresh(field, step, gen)
        last.update(info)
        loop.log(step + 1, postfix={"stage": stage.name, **{k2.removeprefix("loss_"): f"{v:.3g}" for k2, v in last.items()}},
                 stage=si, teacher=teacher, loss=float(total.detach()), **info, **{k2: float(v.detach()) for k2, v in regs.items()})
        if cfg.preview_every and loop.due(cfg.preview_every, step + 1):
            with loop.paused():
                path = write_preview(field, grid, cfg, out / "previews" / f"step_{step + 1:06d}.png")
                if on_preview is not None:
                    on_preview(path)
    log.close()
    with loop.paused():
        write_outputs(field, grid, cfg, out)
    return ckpt_dir


@torch.no_grad()
def orbit_cameras(cfg: TextTo4DConfig, n: int, resolution: int, elevation: float = 15.0, radius: float | None = None,
                  fov: float | None = None):
    """n cameras on an orbit (4D-fy's evaluation orbit: elevation 15, radius 3, fov 40; the
    radius and fov default to the middle of the training ranges)."""
    from ..cameras import orbit_camera

    radius = float(np.mean(cfg.camera.radius)) if radius is None else radius
    fov = float(np.mean(cfg.camera.fov_deg)) if fov is None else fov
    return [orbit_camera(-180.0 + 360.0 * k / n, elevation, radius, fov, resolution, resolution, (0.0, 0.0, 0.0)) for k in range(n)]


@torch.no_grad()
def render_grid(field, grid, cfg: TextTo4DConfig, times, n_views: int = 8, resolution: int | None = None) -> np.ndarray:
    """(len(times), n_views, H, W, 3) renders: rows are times, columns an orbit."""
    from ..field.render import render_cameras

    res = resolution or max(cfg.render_resolution, 64)
    cams = orbit_cameras(cfg, n_views, res)
    rows = []
    for t in times:
        rows.append(render_cameras(field, grid, cams, [float(t)] * n_views, cfg.render, requires_grad=False)["rgb"].cpu().numpy())
    return np.stack(rows)


def write_preview(field, grid, cfg: TextTo4DConfig, path: Path) -> Path:
    """An orbit strip at t = 0.5 over a time strip at azimuth 0 (8 frames each)."""
    from ..field.render import render_cameras
    from ..io import image_grid, save_image

    orbit = render_grid(field, grid, cfg, [0.5], 8, cfg.render_resolution)[0]
    cam = orbit_cameras(cfg, 1, cfg.render_resolution)[0]
    times = np.linspace(0, 1, 8)
    with torch.no_grad():
        strip = render_cameras(field, grid, [cam] * 8, list(times), cfg.render, requires_grad=False)["rgb"].cpu().numpy()
    save_image(path, image_grid(np.concatenate([orbit, strip]), rows=2))
    return path


def write_outputs(field, grid, cfg: TextTo4DConfig, out: Path) -> None:
    """OUT/grid.png (times x orbit) and OUT/orbit.mp4 (an orbit at each of cfg.orbit_times)."""
    from ..io import image_grid, save_image, write_video

    grid_images = render_grid(field, grid, cfg, cfg.orbit_times, 8)
    save_image(out / "grid.png", image_grid(grid_images.reshape(-1, *grid_images.shape[2:]), rows=len(cfg.orbit_times)))
    frames = []
    for t in cfg.orbit_times:
        frames.append(render_grid(field, grid, cfg, [t], 24)[0])
    write_video(out / "orbit.mp4", np.concatenate(frames), fps=12)
