"""Distil a 4D source into the Time and View Mappers of a frozen 2D diffusion model.

One training step (docs/method.md, 1.5):

    pairs (reference, target, d, ΔP)  ->  target latents z0 = VAE(target) * scaling factor
    t ~ U[0, 1000), eps ~ N(0, I), z_t = add_noise(z0, eps, t)
    per-layer text conditions C = conditioner(prompt with <time>/<view>, t, d, ΔP)   (L, B, 77, C)
    image tokens from the reference through the IP-Adapter (decoupled cross-attention)
    loss = || eps - U-Net(z_t, t, C, image tokens) ||^2   (v instead of eps for a v-prediction teacher)

Only the mappers train. The VAE, U-Net, text encoder, image encoder and IP-Adapter are frozen.
Built on accelerate: the same command runs data-parallel on several GPUs with
`accelerate launch -m fourdistill.cli distill ...`, with fp16/bf16 on GPU and fp32 on CPU.

Randomness is a function of (seed, step): pairs, noise, timesteps and nested dropout of step k
are drawn from the generators of (seed, k, process 0) (engine.loop.step_generators), so
`--resume` continues the same run exactly, whatever happened before the interruption.

Several processes. `batch_size` is the batch of one micro-step over all processes. Every
process draws that whole batch from the same generators (pairs, the VAE's latent sample, noise,
timesteps, nested dropout) and trains on its own contiguous rows (`process_rows`), so P
processes compute the gradient of the loss of the batch one process would draw, and DDP's
average makes the same update up to float summation order. The price of that rule: each
process draws the whole batch's pairs and runs the conditioner (text encoder and mappers) on
the whole batch; the VAE, image encoder and U-Net, the bulk of a step, see only its rows.

The loop, checkpoints, logs, card and the --resume rule are the engine's (fourdistill.engine).
Run layout under `out`:
    config.json                     the DistillConfig (compared on --resume)
    checkpoint/mappers.safetensors  mapper weights (what fourdistill.mappers.load_mappers reads)
    checkpoint/mappers.json         mapper configs, layers, bypass, distill_config, step, wall_s, command
    checkpoint/optimizer.pt         AdamW state
    checkpoint/train_state.pt       step, wall_s, RNG states
    checkpoint/README.md            the model card
    loss.jsonl, validation.jsonl    {"step", "wall_s", "loss"} and {"step", "wall_s", "psnr", "fixed_batch_loss"}
    tensorboard/, validation/, curves.png
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env
from diffusers import DDPMScheduler
from matplotlib.figure import Figure

from .conditioning.processors import install_layer_processors
from .conditioning.text import BypassConfig, MappedTextConditioner, super_category_norm
from .diffusion.schedule import prediction_target
from .engine.checkpoint import (
    OPTIMIZER_NAME,
    STATE_NAME,
    capture_rng,
    has_checkpoint,
    load_checkpoint,
    load_torch_file,
    load_weights,
    save_checkpoint,
)
from .engine.config import check_resume, start_run
from .engine.loop import Loop, RunLog, step_generators
from .evaluate.metrics import psnr_numpy
from .generate import ControlledPipeline, ViewChange
from .io import atomic_path, image_grid, save_image
from .mappers.checkpoint import CONFIG_NAME, WEIGHTS_NAME, mapper_config, read_mapper_config, write_mapper_card
from .mappers.neti import MapperConfig, TimeMapper, ViewMapper
from .pairs import PairConfig, PairSampler
from .sources import open_source
from .sources.world import WorldScenes
from .sources.world_seed import check_train_source
from .teachers.image.ip_adapter import encode_image_prompts
from .teachers.image.load import load_stack
from .world import EVAL_SEEDS

MODES = ("time", "view", "joint")


@dataclass
class DistillConfig:
    """Settings of a distillation run. Defaults follow the reference implementation (docs/method.md, 1.5)."""

    source: str = "world"  # "world" (procedural scenes), a path any 4D reader opens, or a fitted field folder
    mode: str = "time"  # time | view | joint
    model: str | None = None  # None: the embedded stack; else a local folder or a hub id
    ip_adapter_scale: float = 0.5  # reference: IP-Adapter-Plus scale 0.5
    steps: int = 1000  # optimizer steps
    batch_size: int = 3  # reference; one micro-step's pairs over all processes
    grad_accum: int = 3  # reference
    lr: float = 1e-3  # reference, with no hidden multiplier
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    mixed_precision: str = "no"  # no | fp16 | bf16 (GPU)
    seed: int = 0
    resolution: int | None = None  # None: the model's native size
    world_seeds: tuple[int, int] = (0, 2000)  # training scenes for source="world": [start, stop)
    time_delta_abs: tuple[float, float] = (0.0, 1.0)
    azimuth_delta_deg: tuple[float, float] = (-90.0, 90.0)
    elevation_delta_deg: tuple[float, float] = (-15.0, 15.0)
    p_same: float = 0.05  # reference: identity-anchoring same-frame pairs
    view_condition: str = "spherical"
    hidden_dim: int = 64
    time_alpha: float = 0.2
    view_alpha: float = 0.2  # NeTI's alpha; 1.0 breaks the view token on a v-prediction stack (docs/results/2026-12-stack-experiments.md)
    normalize_base: bool = True  # NeTI: v_base scaled to the norm of "time" / "view"
    nested_dropout_p: float = 0.5
    save_every: int = 250
    validate_every: int = 250
    log_every: int = 10
    out: str = "runs/distill"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be positive")
        self.betas = tuple(self.betas)
        self.world_seeds = tuple(self.world_seeds)
        self.time_delta_abs = tuple(self.time_delta_abs)
        self.azimuth_delta_deg = tuple(self.azimuth_delta_deg)
        self.elevation_delta_deg = tuple(self.elevation_delta_deg)


def process_rows(batch_size: int, num_processes: int, process: int) -> slice:
    """The contiguous rows of a `batch_size` batch that `process` of `num_processes` trains on.

    Shares differ by at most one row (the first `batch_size % num_processes` processes take one
    more); every process needs at least one row."""
    if batch_size < num_processes:
        raise ValueError(f"batch_size ({batch_size}) must be at least the number of processes ({num_processes}): every process needs a row")
    share, extra = divmod(batch_size, num_processes)
    start = process * share + min(process, extra)
    return slice(start, start + share + (process < extra))


def check_training_data(cfg: DistillConfig) -> None:
    """Refuse held-out world scenes before anything is written, whatever path the run came by
    (the command or a library call): world seeds overlapping EVAL_SEEDS, or a source that is,
    exports or was fitted to a held-out scene; a source that cannot be opened is named too."""
    if cfg.source == "world":
        start, stop = cfg.world_seeds
        if start >= stop:
            raise ValueError(f"--world-seeds {start} {stop}: START must be below STOP (the scenes are START..STOP-1)")
        if start < EVAL_SEEDS.stop and stop > EVAL_SEEDS.start:
            raise ValueError(
                f"--world-seeds {start} {stop}: seeds {max(start, EVAL_SEEDS.start)}..{min(stop, EVAL_SEEDS.stop) - 1} are held out "
                f"for evaluation ({EVAL_SEEDS.start}..{EVAL_SEEDS.stop - 1}) and never trained on"
            )
    else:
        check_train_source(cfg.source, "--source")


def open_training_sources(cfg: DistillConfig, resolution: int):
    """The sources pairs are drawn from: lazily built world scenes, or one opened path; held-out
    scenes are refused (check_training_data), also when a Distiller is built without run()."""
    check_training_data(cfg)
    if cfg.source == "world":
        return WorldScenes(range(*cfg.world_seeds), resolution=resolution)
    return [open_source(cfg.source)]


class Distiller:
    """Holds the frozen stack, the mappers, the optimizer and the pair sampler of one run."""

    def __init__(self, cfg: DistillConfig, pipe=None):
        self.cfg = cfg
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
        process_rows(cfg.batch_size, self.accelerator.num_processes, 0)  # a batch too small to split fails before loading
        device = self.accelerator.device
        weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        if pipe is None:
            pipe = load_stack(cfg.model, ip_adapter=True, device=device, dtype=weight_dtype)
        pipe.set_ip_adapter_scale(cfg.ip_adapter_scale)
        for module in (pipe.vae, pipe.unet, pipe.text_encoder, pipe.image_encoder):
            module.requires_grad_(False).eval()
        self.pipe = pipe
        self.layers = install_layer_processors(pipe.unet)
        width = pipe.text_encoder.config.hidden_size
        common = dict(word_dim=width, n_layers=len(self.layers), hidden_dim=cfg.hidden_dim, nested_dropout_p=cfg.nested_dropout_p)
        time_mapper = view_mapper = None
        torch.manual_seed(cfg.seed)  # mapper initialisation
        if cfg.mode in ("time", "joint"):
            norm = super_category_norm(pipe.text_encoder, pipe.tokenizer, "time") if cfg.normalize_base else None
            time_mapper = TimeMapper(MapperConfig(kind="time", base_norm=norm, encoding_seed=cfg.seed, **common))
        if cfg.mode in ("view", "joint"):
            norm = super_category_norm(pipe.text_encoder, pipe.tokenizer, "view") if cfg.normalize_base else None
            view_mapper = ViewMapper(
                MapperConfig(kind="view", base_norm=norm, encoding_seed=cfg.seed + 1, view_condition=cfg.view_condition, **common)
            )
        conditioner = MappedTextConditioner(
            pipe.text_encoder, pipe.tokenizer, len(self.layers), time_mapper, view_mapper, BypassConfig(cfg.time_alpha, cfg.view_alpha)
        ).to(device)
        optimizer = torch.optim.AdamW(conditioner.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.conditioner, self.optimizer = self.accelerator.prepare(conditioner, optimizer)
        self.weight_dtype = weight_dtype
        vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.resolution = cfg.resolution or pipe.unet.config.sample_size * vae_scale
        self.sampler = PairSampler(
            open_training_sources(cfg, self.resolution),
            PairConfig(
                mode=cfg.mode,
                time_delta_abs=cfg.time_delta_abs,
                p_same=cfg.p_same,
                azimuth_delta_deg=cfg.azimuth_delta_deg,
                elevation_delta_deg=cfg.elevation_delta_deg,
                resolution=self.resolution,
            ),
            seed=cfg.seed,
        )
        self.step = 0
        self.out = Path(cfg.out)
        self.started = time.perf_counter()
        self.wall_before = 0.0  # training seconds before the last --resume
        self.command = None

    # ------------------------------------------------------------------ one step
    @property
    def mapper_module(self):
        return self.accelerator.unwrap_model(self.conditioner)

    def prompts(self, captions: list[str]) -> list[str]:
        return [self.mapper_module.prompt(c) for c in captions]

    def conditions(self, batch, timesteps):
        """Per-layer conditions (L, B, 77, C) for a pair batch."""
        m = self.mapper_module
        device = self.accelerator.device
        ids = m.tokenize(self.prompts(batch.captions), device=device)
        time_cond = m.time_mapper.condition(batch.time_delta.to(device)) if m.time_mapper is not None else None
        view_cond = None
        if m.view_mapper is not None:
            view_cond = m.view_mapper.condition(batch.spherical_delta.to(device), batch.relative_pose.to(device))
        # without gradients (evaluation, on the main process alone) the unwrapped module: DDP's
        # forward may broadcast buffers, a collective the other processes would not join
        conditioner = self.conditioner if torch.is_grad_enabled() else m
        return conditioner(ids, timesteps, time_cond, view_cond)

    def image_embeds(self, reference):
        """IP-Adapter image inputs for references (B, 3, H, W) in [-1, 1]: a list with one (B, 1, ...) tensor."""
        images = ((reference.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        embeds, _ = encode_image_prompts(self.pipe, list(images))
        return [embeds.unsqueeze(1)]

    def loss(self, batch, gen, rows: slice | None = None):
        """The mean loss over `rows` of `batch` (default: all of them).

        Every random draw (the VAE's latent sample and nested dropout from the global generator,
        noise and timesteps from `gen`) is made for the whole batch and sliced to `rows`, so the
        rows' losses are those of the whole batch computed in one process."""
        pipe, device = self.pipe, self.accelerator.device
        n = len(batch)
        rows = slice(0, n) if rows is None else rows
        with torch.no_grad():
            target = batch.target[rows].to(device=device, dtype=self.weight_dtype)
            latent_dist = pipe.vae.encode(target).latent_dist
            # DiagonalGaussianDistribution.sample(generator=None), its draw made for the whole batch
            sample = torch.randn((n, *latent_dist.mean.shape[1:]), device=latent_dist.parameters.device, dtype=latent_dist.parameters.dtype)
            latents = (latent_dist.mean + latent_dist.std * sample[rows]) * pipe.vae.config.scaling_factor
            image_embeds = self.image_embeds(batch.reference[rows])
        noise = torch.randn((n, *latents.shape[1:]), generator=gen)[rows].to(device=device, dtype=latents.dtype)
        n_train = pipe.scheduler.config.num_train_timesteps
        all_timesteps = torch.randint(0, n_train, (n,), generator=gen).to(device)
        timesteps = all_timesteps[rows]
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        # in the frozen U-Net's dtype: under mixed precision accelerate returns the conditioner's
        # output in fp32 (as diffusers' textual-inversion script casts encoder_hidden_states)
        conds = self.conditions(batch, all_timesteps)[:, rows].to(self.weight_dtype)
        pred = pipe.unet(
            noisy,
            timesteps,
            encoder_hidden_states=conds[0],
            added_cond_kwargs={"image_embeds": image_embeds},
            cross_attention_kwargs={"layer_conditions": conds},
        ).sample
        # the teacher's own target: epsilon for SD 1.x, v for SD 2.x 768-v (its scheduler config says which)
        return F.mse_loss(pred.float(), prediction_target(self.noise_scheduler, latents, noise, timesteps).float())

    @property
    def noise_scheduler(self):
        if not hasattr(self, "_noise_scheduler"):
            self._noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return self._noise_scheduler

    def train_step(self) -> float:
        """One optimizer step (grad_accum micro-batches). Returns the mean loss over the whole
        batch (all processes).

        Each process trains on its rows of the batch (`process_rows`). Its loss is weighted by
        rows * processes / batch_size, so that DDP's mean of the processes' gradients is the
        gradient of the whole batch's mean loss even when the shares differ by a row."""
        acc = self.accelerator
        n, processes = self.cfg.batch_size, acc.num_processes
        rows = process_rows(n, processes, acc.process_index)
        share = rows.stop - rows.start
        losses = []
        for micro in range(self.cfg.grad_accum):
            # process 0's generators on every process: all draw the same whole batch
            np_rng, gen = step_generators(self.cfg.seed, self.step * self.cfg.grad_accum + micro, 0)
            torch.manual_seed(int(np_rng.integers(2**62)))  # the VAE sample and nested dropout draw from the global generator
            batch = self.sampler.batch(n, rng=np_rng)
            with acc.accumulate(self.conditioner):
                loss = self.loss(batch, gen, rows)
                acc.backward(loss if processes == 1 else loss * (share * processes / n))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if processes == 1:
                losses.append(float(loss.detach()))
            else:
                losses.append(float(acc.reduce(loss.detach() * (share / n), reduction="sum")))
        self.step += 1
        return float(np.mean(losses))

    def eval_loss(self, n_batches: int = 4, seed: int = 12345) -> float:
        """Mean loss over fixed batches (fixed pairs, noise and timesteps), mappers in eval mode."""
        module = self.mapper_module
        was_training = module.training
        module.eval()
        losses = []
        with torch.no_grad():
            for k in range(n_batches):
                np_rng, gen = step_generators(seed, k, 0)
                torch.manual_seed(int(np_rng.integers(2**62)))
                batch = self.sampler.batch(self.cfg.batch_size, rng=np_rng)
                losses.append(float(self.loss(batch, gen)))
        module.train(was_training)
        return float(np.mean(losses))

    # ------------------------------------------------------------------ validation
    def validation_batch(self, n: int = 4):
        """Fixed pairs (the same at every validation and after --resume)."""
        if not hasattr(self, "_validation"):
            np_rng, _ = step_generators(self.cfg.seed, 0, 0xFA1)
            self._validation = self.sampler.batch(n, rng=np_rng)
        return self._validation

    def validate(self, path, steps: int = 20) -> float:
        """Generate the validation pairs' targets from their references with the current mappers;
        write a grid (rows: reference, generated, true target) and return the PSNR to the targets."""
        batch = self.validation_batch()
        module = self.mapper_module
        was_training = module.training
        module.eval()
        refs, targets = batch.images(batch.reference), batch.images(batch.target)
        cp = ControlledPipeline(self.pipe, conditioner=module)
        try:
            images = cp(
                list(batch.captions),
                refs,
                time=batch.time_delta.tolist() if cp.has_time else None,
                view=[ViewChange(*map(float, s)) for s in batch.spherical_delta] if cp.has_view else None,
                num_inference_steps=steps,
                ip_adapter_scale=self.cfg.ip_adapter_scale,
                seed=self.cfg.seed,
            )
        finally:
            module.train(was_training)
        save_image(path, image_grid(np.concatenate([refs, images, targets]), rows=3))
        return float(np.mean(psnr_numpy(images, targets)))

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder=None, wall_s: float | None = None) -> Path:
        """Atomic checkpoint (engine layout): mappers (safetensors + mappers.json with the run
        config), optimizer, RNG states, step and wall time, as one folder."""
        folder = Path(folder or self.out / "checkpoint")
        if not self.accelerator.is_main_process:
            return folder
        module = self.mapper_module
        meta = mapper_config(
            module,
            self.layers,
            self.cfg.model or "embedded",
            extra={
                "distill_config": asdict(self.cfg),
                "resolution": self.resolution,
                "command": self.command,
                "device": str(self.accelerator.device),
                "threads": torch.get_num_threads(),
            },
        )
        wall_s = self.wall_before + time.perf_counter() - self.started if wall_s is None else wall_s
        return save_checkpoint(
            folder, step=self.step, wall_s=wall_s, model=module.state_dict(), optimizer=self.optimizer.state_dict(),
            rng=capture_rng(), meta=meta, weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME,
        )

    def resume(self, folder) -> None:
        """Continue from a checkpoint folder: weights, optimizer, step and wall time. A setting
        that differs from the checkpoint's distill_config (but steps and intervals) is refused."""
        folder = Path(folder)
        config = read_mapper_config(folder)
        if "distill_config" in config:
            check_resume(config["distill_config"], asdict(self.cfg), folder)
        if (folder / STATE_NAME).is_file():
            ckpt = load_checkpoint(folder, weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME)
            weights, optimizer, step, wall_s = ckpt.model, ckpt.optimizer, ckpt.step, ckpt.wall_s
        else:  # written before the engine: optimizer.pt held {"optimizer", "step"}
            state = load_torch_file(folder / OPTIMIZER_NAME, "optimizer state")
            weights, optimizer, step, wall_s = load_weights(folder / WEIGHTS_NAME), state["optimizer"], state["step"], config.get("wall_s", 0.0)
        self.mapper_module.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer)
        self.step = int(step)
        self.wall_before = float(wall_s)
        self.started = time.perf_counter()


def run(cfg: DistillConfig, resume: bool = False, pipe=None, progress: bool = True, command: str | None = None) -> dict:
    """Train for `cfg.steps` optimizer steps; returns a summary with the loss curve. The final
    checkpoint folder gets a model card (README.md) with the command, steps, wall time and curves.

    resume: continue the run in `cfg.out` (the engine's --resume rule: without it a folder
    holding a run is refused; with it a changed setting is refused, naming it)."""
    check_training_data(cfg)  # held-out scenes never reach the trainer, by any path
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    resuming = resume and has_checkpoint(ckpt_dir, CONFIG_NAME)
    # ACCELERATE_USE_CPU (accelerate launch --cpu) as the Accelerator reads it: the first state
    # made fixes the distributed setup, and one made without it ignores CPU processes
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    process_rows(cfg.batch_size, state.num_processes, 0)  # before anything is written
    main = state.is_main_process
    if main:
        saved = read_mapper_config(ckpt_dir).get("distill_config") if resuming else None
        start_run(out, cfg, resume, saved=saved, command=command)
    distiller = Distiller(cfg, pipe=pipe)
    distiller.command = command
    if resuming:
        distiller.resume(ckpt_dir)
    log = RunLog(out, main="loss", enabled=main)
    log.truncate(distiller.step)  # keep the curves up to where this run continues from
    loop = Loop(
        cfg.steps, start_step=distiller.step, wall_s=distiller.wall_before, desc=f"distill {cfg.mode}", progress=progress,
        log=log, save=lambda done: distiller.save(wall_s=loop.wall_s), save_every=cfg.save_every, main=main,
    )
    started = time.perf_counter()
    losses = []
    for _ in loop:
        loss = distiller.train_step()
        losses.append(loss)
        loop.log(distiller.step, postfix={"loss": f"{loss:.4f}"}, loss=loss)
        if cfg.validate_every and main and (loop.due(cfg.validate_every, distiller.step) or distiller.step == cfg.steps):
            val_psnr = distiller.validate(out / "validation" / f"step_{distiller.step:06d}.png")
            # the training loss is dominated by the noise level drawn each step; the loss on fixed
            # pairs, noise and timesteps shows what the mappers learnt
            fixed = distiller.eval_loss(n_batches=4)
            log.write(distiller.step, loop.wall_s, "validation", psnr=val_psnr, fixed_batch_loss=fixed)
    log.close()
    if main:
        write_mapper_card(ckpt_dir, log.path(), log.path("validation"))
        plot_curves(log.path(), log.path("validation"), out / "curves.png")
    return {"steps": distiller.step, "losses": losses, "wall_s": loop.wall_s, "seconds": time.perf_counter() - started, "checkpoint": str(ckpt_dir)}


def plot_curves(loss_path, validation_path, png) -> Path | None:
    """Loss (raw and a 50-step moving mean) and validation PSNR against steps, one PNG."""
    read = lambda p: [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()] if Path(p).is_file() else []  # noqa: E731
    losses, vals = read(loss_path), read(validation_path)
    if not losses:
        return None
    steps = np.array([r["step"] for r in losses])
    loss = np.array([r["loss"] for r in losses])
    k = min(50, len(loss))
    mean = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig = Figure(figsize=(10 if vals else 5, 3.4))
    axes = fig.subplots(1, 2 if vals else 1, squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, loss, color="0.8", lw=0.8, label="loss")
    ax.plot(steps[k - 1 :], mean, color="C0", label=f"{k}-step mean")
    ax.set_xlabel("step")
    ax.set_ylabel("epsilon MSE")
    ax.legend()
    ax.grid(alpha=0.3)
    if vals:
        ax = axes[0][1]
        ax.plot([r["step"] for r in vals], [r["psnr"] for r in vals], marker="o", color="C1")
        ax.set_xlabel("step")
        ax.set_ylabel("validation PSNR vs truth (dB)")
        ax.grid(alpha=0.3)
        fixed = [(r["step"], r["fixed_batch_loss"]) for r in vals if "fixed_batch_loss" in r]
        if fixed:
            twin = ax.twinx()
            twin.plot(*zip(*fixed), marker="s", color="C2")
            twin.set_ylabel("fixed-batch loss", color="C2")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(png)
