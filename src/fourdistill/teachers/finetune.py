"""Fine-tune a multi-view or video teacher from the image stack, on world K-view sets or clips.

Both new teachers start from a trained image model and learn what it lacks, as their papers do:
MVDream (Shi et al. 2024) fine-tunes SD 2.1 on 4-view renders with a camera embedding and
shared self-attention; AnimateDiff (Guo et al. 2024) freezes the image model and trains motion
modules on clips. One trainer does both; what differs is a `TeacherKind`:

    kind.mode                                  "views" or "clips" (teachers.data.render_world_set)
    kind.build(parts, cfg) -> model            the denoiser to train, built from the base parts
    kind.trainable(model) -> [parameters]      what the optimizer moves (the rest stays frozen)
    kind.predict(model, noisy, t, text, batch) (B, S, C, h, w) output for S views or frames
    kind.save(model, parts, folder, info)      the teacher folder its loader reads

`finetune(..., score=fn)`: fn(teacher_folder, cfg) -> dict of held-out numbers, written into
the teacher's card (the command passes evaluate.teachers.score_teacher; evaluation sits on a
higher floor than the teachers).

The step: B sets of S latents (one world scene at one time seen from S cameras, or one camera
over S times), one timestep per set shared by its S members (MVDream; AnimateDiff's clips share
one t too), the caption's text states (dropped to the empty caption with `text_dropout`,
for classifier-free guidance), and the plain diffusion loss on the stack's own prediction target
(v for the embedded stack) over every element.

The run is the engine's: OUT/config.json, OUT/log.jsonl + TensorBoard, OUT/checkpoint (the
trainable weights, the optimizer, the step and wall time; every step's randomness is a function
of (seed, step), so --resume continues bit for bit), and the finished teacher OUT/teacher with
its model card. The renders are encoded once into OUT/latents.safetensors (rebuilt when missing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..diffusion.schedule import prediction_target
from .data import DataConfig

KINDS = ("multiview", "video")
CHECKPOINT_DIR = "checkpoint"
TEACHER_DIR = "teacher"
LATENTS_NAME = "latents.safetensors"
WEIGHTS_NAME = "trainable.safetensors"
META_NAME = "checkpoint.json"


@dataclass
class FinetuneConfig:
    """One teacher fine-tuning run (configs/teachers/multiview.yaml, video.yaml)."""

    kind: str = "multiview"  # KINDS
    base: str = "embedded"  # the image stack it starts from and shares its VAE, text encoder, tokenizer with
    data: DataConfig = field(default_factory=lambda: DataConfig(n_scenes=1000, views_per_scene=2))
    n_views: int = 4  # multiview: views per set (MVDream, 4D-fy: 4)
    n_frames: int = 8  # video: frames per clip
    steps: int = 1500
    batch: int = 8  # sets (view sets or clips) per step
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    cooldown_steps: int = 300  # linear decay to zero over the last K steps
    text_dropout: float = 0.1  # captions replaced by the empty one (classifier-free guidance)
    seed: int = 0
    threads: int | None = 1
    checkpoint_every: int = 100
    eval_scenes: int = 32  # held-out scenes scored into the card at the end (0: none)
    store_float16: bool = True  # the teacher folder's new weights in float16 (the shipped budget)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        for name in ("n_views", "n_frames", "steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ValueError(f"text_dropout must lie in [0, 1), got {self.text_dropout}")
        if self.batch > self.data.n_scenes * self.data.views_per_scene:
            raise ValueError(f"batch {self.batch} is larger than the {self.data.n_scenes * self.data.views_per_scene} training sets")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def set_size(self) -> int:
        return self.n_views if self.kind == "multiview" else self.n_frames


def teacher_kind(name: str):
    """The TeacherKind of `name` (imported on first use)."""
    if name == "multiview":
        from .multiview.train import MULTIVIEW

        return MULTIVIEW
    if name == "video":
        from .video.train import VIDEO

        return VIDEO
    raise ValueError(f"kind must be one of {KINDS}, got {name!r}")


# ----------------------------------------------------------------------------- data
def encode_training_sets(parts, cfg: FinetuneConfig, mode: str, progress: bool = True) -> dict:
    """Render the training sets and encode them: latents (N, S, C, h, w) (the VAE posterior's
    mean, scaled), scene (N,) into captions, text (n_captions + 1, L, D) with the empty caption
    last, and the mode's extras (cameras (N, S, 4, 4) for views)."""
    from tqdm.auto import tqdm

    from .data import render_world_set

    data = render_world_set(cfg.data, parts.resolution, cfg.seed, mode, n_views=cfg.n_views, n_frames=cfg.n_frames, progress=progress)
    images = data["images"]  # (N, S, H, W, 3)
    n, s = images.shape[:2]
    flat = images.reshape(n * s, *images.shape[2:])
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, len(flat), 64), desc="encoding latents", disable=not progress, unit="batch"):
            x = torch.from_numpy(flat[i : i + 64]).float().div(255).permute(0, 3, 1, 2) * 2 - 1
            chunks.append(parts.vae.encode(x).latent_dist.mean * parts.vae.config.scaling_factor)
        latents = torch.cat(chunks).reshape(n, s, *chunks[0].shape[1:])
        captions = [str(c) for c in data["captions"]] + [""]
        text = torch.cat([parts.encode_text(captions[i : i + 64]) for i in range(0, len(captions), 64)])
    out = {"latents": latents.contiguous(), "scene": torch.from_numpy(data["scene"]), "text": text.contiguous()}
    if mode == "views":
        out["cameras"] = torch.from_numpy(data["cameras"]).contiguous()
    return out


def load_or_encode(out: Path, parts, cfg: FinetuneConfig, mode: str, progress: bool) -> dict:
    from safetensors.torch import load_file, save_file

    from ..io import atomic_path

    path = out / LATENTS_NAME
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{path}: damaged latents cache ({exc}); delete it to re-render") from None
    data = encode_training_sets(parts, cfg, mode, progress)
    with atomic_path(path) as tmp:
        save_file(data, str(tmp))
    return data


# ----------------------------------------------------------------------------- the step
def diffusion_loss(kind, model, noise_scheduler, data: dict, idx: torch.Tensor, gen: torch.Generator, text_dropout: float) -> torch.Tensor:
    """The plain diffusion loss on the sets `idx`: one timestep per set shared by its S members,
    the stack's prediction target, mean squared error over every element."""
    x0 = data["latents"][idx]  # (B, S, C, h, w)
    b, s = x0.shape[:2]
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=gen)
    drop = torch.rand(b, generator=gen) < text_dropout
    caption = torch.where(drop, torch.full_like(data["scene"][idx], len(data["text"]) - 1), data["scene"][idx])
    text = data["text"][caption]
    flat_t = t.repeat_interleave(s)
    noisy = noise_scheduler.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), flat_t).reshape(x0.shape)
    target = prediction_target(noise_scheduler, x0.flatten(0, 1), noise.flatten(0, 1), flat_t).reshape(x0.shape)
    batch = {k: v[idx] for k, v in data.items() if k not in ("latents", "scene", "text")}
    pred = kind.predict(model, noisy, t, text, batch)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


def _lr_at(cfg: FinetuneConfig):
    from ..engine.schedules import warmup_cooldown

    factor = warmup_cooldown(cfg.warmup_steps, cfg.steps, cfg.cooldown_steps)
    return lambda step: cfg.lr * factor(step)


# ----------------------------------------------------------------------------- the run
def finetune(out, cfg: FinetuneConfig, resume: bool = False, progress: bool = True, command: str | None = None, score=None) -> Path:
    """Train the teacher of `cfg.kind` into the run folder `out`; returns OUT/teacher."""
    from ..engine import config as engine_config
    from ..engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
    from ..engine.loop import Loop, RunLog, step_generators
    from ..engine.run import set_threads
    from .parts import load_base_parts

    out = Path(out)
    ckpt_dir = out / CHECKPOINT_DIR
    engine_config.start_run(out, cfg, resume, command=command)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    kind = teacher_kind(cfg.kind)
    parts = load_base_parts(cfg.base)
    parts.eval()
    started = time.perf_counter()
    data = load_or_encode(out, parts, cfg, kind.mode, progress)
    render_s = time.perf_counter() - started
    model = kind.build(parts, cfg)
    params = kind.trainable(model)
    names = {id(p): n for n, p in model.named_parameters()}
    trainable_names = [names[id(p)] for p in params]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step, wall_s = 0, 0.0
    if resume and has_checkpoint(ckpt_dir, META_NAME):
        state = load_checkpoint(ckpt_dir, weights_name=WEIGHTS_NAME, meta_name=META_NAME)
        missing = [n for n in trainable_names if n not in state.model]
        if missing:
            raise ValueError(f"{ckpt_dir / WEIGHTS_NAME}: does not hold the trainable weight {missing[0]!r} of a {cfg.kind} teacher")
        model.load_state_dict(state.model, strict=False)
        optimizer.load_state_dict(state.optimizer)
        start_step, wall_s = state.step, state.wall_s
    log = RunLog(out, main="log")
    log.truncate(start_step)
    losses = [float(r["loss"]) for r in log.rows()]
    noise_scheduler = parts.training_scheduler
    lr_at = _lr_at(cfg)
    n_sets = len(data["latents"])

    def training_info(done: int) -> dict:
        return {"kind": cfg.kind, "config": engine_config.config_to_dict(cfg), "steps": done, "wall_s": round(loop.wall_s, 1),
                "render_s": round(render_s, 1), "training_sets": n_sets, "set_size": cfg.set_size,
                "final_loss": float(np.mean(losses[-50:])) if losses else None, "command": command,
                "trainable_parameters": int(sum(p.numel() for p in params))}

    def save(done: int) -> None:
        weights = {n: p.detach() for n, p in model.named_parameters() if n in set(trainable_names)}
        save_checkpoint(ckpt_dir, step=done, wall_s=loop.wall_s, model=weights, optimizer=optimizer.state_dict(),
                        extra={"trainable": trainable_names}, meta={"training": training_info(done)},
                        weights_name=WEIGHTS_NAME, meta_name=META_NAME)

    loop = Loop(cfg.steps, start_step=start_step, wall_s=wall_s, desc=f"train {cfg.kind} teacher", progress=progress,
                log=log, save=save, save_every=cfg.checkpoint_every)
    model.train()
    for step in loop:
        _, gen = step_generators(cfg.seed, step)
        idx = torch.randperm(n_sets, generator=gen)[: cfg.batch]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = diffusion_loss(kind, model, noise_scheduler, data, idx, gen, cfg.text_dropout)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        loop.log(step + 1, postfix={"loss": f"{np.mean(losses[-20:]):.4f}"}, loss=loss.item(), lr=lr_at(step))
    log.close()
    model.eval()
    info = training_info(loop.step)
    teacher = out / TEACHER_DIR
    kind.save(model, parts, teacher, info)
    if cfg.eval_scenes and score is not None:
        scored = time.perf_counter()
        info["heldout"] = {**score(teacher, cfg), "scoring_s": round(time.perf_counter() - scored, 1)}
        kind.save(model, parts, teacher, info)
    return teacher

