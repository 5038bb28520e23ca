"""Distil a 4D source into the Time and View Mappers of a frozen 2D diffusion model.

One training step (method notes 1.5, the seed's Figure 3):

    pairs (reference, target, d, ΔP)  ->  target latents z0 = VAE(target) * scaling factor
    t ~ U[0, 1000), eps ~ N(0, I), z_t = add_noise(z0, eps, t)
    per-layer text conditions C = conditioner(prompt with <time>/<view>, t, d, ΔP)   (L, B, 77, C)
    image tokens from the reference through the IP-Adapter (decoupled cross-attention)
    loss = || eps - U-Net(z_t, t, C, image tokens) ||^2   (v instead of eps for a v-prediction teacher)

Only the mappers train. The VAE, U-Net, text encoder, image encoder and IP-Adapter are frozen.
Built on accelerate: the same command runs data-parallel on several GPUs with
`accelerate launch -m fourdistill.cli distill ...`, with fp16/bf16 on GPU and fp32 on CPU.

Randomness is a function of (seed, step): pairs, noise, timesteps and nested dropout of step k
are drawn from generators seeded with (seed, k, process), so `--resume` continues the same run
exactly, whatever happened before the interruption.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MODES = ("time", "view", "joint")


@dataclass
class DistillConfig:
    """Settings of a distillation run. Defaults follow the reference (method notes 1.5)."""

    source: str = "world"  # "world" (procedural scenes), a path any 4D reader opens, or a fitted field folder
    mode: str = "time"  # time | view | joint
    model: str | None = None  # None: the embedded stack; else a local folder or a hub id
    ip_adapter_scale: float = 0.5  # reference: IP-Adapter-Plus scale 0.5
    steps: int = 1000  # optimizer steps
    batch_size: int = 3  # reference
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
    view_alpha: float = 0.2  # NeTI's alpha; 1.0 breaks the view token on a v-prediction stack (docs/teachers.md)
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


def step_generators(seed: int, step: int, process: int = 0):
    """The (numpy, torch) generators of one step: randomness as a function of (seed, step)."""
    import torch

    np_rng = np.random.default_rng([int(seed), int(step), int(process), 0xD1])
    torch_gen = torch.Generator().manual_seed(int(np_rng.integers(2**62)))
    return np_rng, torch_gen


def open_training_sources(cfg: DistillConfig, resolution: int):
    """The sources pairs are drawn from: lazily built world scenes, or one opened path."""
    if cfg.source == "world":
        from .sources.world import WorldScenes

        return WorldScenes(range(*cfg.world_seeds), resolution=resolution)
    from .sources import open_source

    return [open_source(cfg.source)]


class Distiller:
    """Holds the frozen stack, the mappers, the optimizer and the pair sampler of one run."""

    def __init__(self, cfg: DistillConfig, pipe=None):
        import torch
        from accelerate import Accelerator

        from .conditioning.processors import install_layer_processors
        from .conditioning.text import BypassConfig, MappedTextConditioner, super_category_norm
        from .mappers.neti import MapperConfig, TimeMapper, ViewMapper
        from .pairs import PairConfig, PairSampler

        self.cfg = cfg
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
        device = self.accelerator.device
        weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        if pipe is None:
            from .teachers.load import load_stack

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
        return self.conditioner(ids, timesteps, time_cond, view_cond)

    def image_embeds(self, reference):
        """IP-Adapter image inputs for references (B, 3, H, W) in [-1, 1]: a list with one (B, 1, ...) tensor."""
        import torch

        from .teachers.ip_adapter import encode_image_prompts

        images = ((reference.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        embeds, _ = encode_image_prompts(self.pipe, list(images))
        return [embeds.unsqueeze(1)]

    def loss(self, batch, gen):
        import torch
        import torch.nn.functional as F
        from .diffusion.schedule import prediction_target

        pipe, device = self.pipe, self.accelerator.device
        with torch.no_grad():
            target = batch.target.to(device=device, dtype=self.weight_dtype)
            latents = pipe.vae.encode(target).latent_dist.sample(generator=None) * pipe.vae.config.scaling_factor
            image_embeds = self.image_embeds(batch.reference)
        noise = torch.randn(latents.shape, generator=gen).to(device=device, dtype=latents.dtype)
        n_train = pipe.scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=gen).to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        conds = self.conditions(batch, timesteps)
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
            from diffusers import DDPMScheduler

            self._noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return self._noise_scheduler

    def train_step(self) -> float:
        """One optimizer step (grad_accum micro-batches). Returns the mean loss."""
        import torch

        losses = []
        for micro in range(self.cfg.grad_accum):
            np_rng, gen = step_generators(self.cfg.seed, self.step * self.cfg.grad_accum + micro, self.accelerator.process_index)
            torch.manual_seed(int(np_rng.integers(2**62)))  # nested dropout draws from the global generator
            batch = self.sampler.batch(self.cfg.batch_size, rng=np_rng)
            with self.accelerator.accumulate(self.conditioner):
                loss = self.loss(batch, gen)
                self.accelerator.backward(loss)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        self.step += 1
        return float(np.mean(losses))

    def eval_loss(self, n_batches: int = 4, seed: int = 12345) -> float:
        """Mean loss over fixed batches (fixed pairs, noise and timesteps), mappers in eval mode."""
        import torch

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
        from .evaluate.metrics import psnr_numpy
        from .generate import ControlledPipeline, ViewChange
        from .io import image_grid, save_image

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
    def save(self, folder=None) -> Path:
        """Atomic checkpoint: mappers (safetensors + JSON), optimizer, step and the run config."""
        import torch

        from .io import atomic_path
        from .mappers.checkpoint import save_mappers

        folder = Path(folder or self.out / "checkpoint")
        if not self.accelerator.is_main_process:
            return folder
        base = self.cfg.model or "embedded"
        save_mappers(
            folder,
            self.mapper_module,
            self.layers,
            base,
            extra={
                "step": self.step,
                "distill_config": asdict(self.cfg),
                "resolution": self.resolution,
                "wall_s": self.wall_before + time.perf_counter() - self.started,
                "command": self.command,
                "device": str(self.accelerator.device),
                "threads": torch.get_num_threads(),
            },
        )
        with atomic_path(folder / "optimizer.pt") as tmp:
            torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step}, tmp)
        return folder

    def resume(self, folder) -> None:
        import torch
        from safetensors.torch import load_file

        from .mappers.checkpoint import WEIGHTS_NAME, read_mapper_config

        folder = Path(folder)
        config = read_mapper_config(folder)
        saved = config.get("distill_config", {})
        for key in ("mode", "seed", "batch_size", "grad_accum", "lr"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(f"{folder}: cannot resume: {key} was {saved[key]!r}, now {getattr(self.cfg, key)!r}")
        self.mapper_module.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.wall_before = float(config.get("wall_s", 0.0))
        self.started = time.perf_counter()


def run(cfg: DistillConfig, resume: str | None = None, pipe=None, progress: bool = True, command: str | None = None) -> dict:
    """Train for `cfg.steps` optimizer steps; returns a summary with the loss curve. The final
    checkpoint folder gets a model card (README.md) with the command, steps, wall time and curves."""
    from tqdm.auto import tqdm

    distiller = Distiller(cfg, pipe=pipe)
    distiller.command = command
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        distiller.resume(resume)
    writer = None
    if distiller.accelerator.is_main_process:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; a trimmed install still trains
            writer = None
    curve_path = out / "loss.jsonl"
    for path in (curve_path, out / "validation.jsonl"):
        if distiller.accelerator.is_main_process and path.exists():
            # keep the curve up to where this run continues from; a fresh run starts a new one
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r["step"] <= distiller.step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    bar = tqdm(total=cfg.steps, initial=distiller.step, desc=f"distill {cfg.mode}", disable=not progress)
    start = time.perf_counter()
    losses = []
    while distiller.step < cfg.steps:
        loss = distiller.train_step()
        losses.append(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {distiller.step}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if distiller.accelerator.is_main_process:
            with open(curve_path, "a") as f:
                f.write(json.dumps({"step": distiller.step, "loss": loss}) + "\n")
            if writer is not None:
                writer.add_scalar("loss", loss, distiller.step)
        if distiller.step % cfg.save_every == 0 or distiller.step == cfg.steps:
            distiller.save()
        if cfg.validate_every and distiller.accelerator.is_main_process and (distiller.step % cfg.validate_every == 0 or distiller.step == cfg.steps):
            val_psnr = distiller.validate(out / "validation" / f"step_{distiller.step:06d}.png")
            # the training loss is dominated by the noise level drawn each step; the loss on fixed
            # pairs, noise and timesteps shows what the mappers learnt
            fixed = distiller.eval_loss(n_batches=4)
            with open(out / "validation.jsonl", "a") as f:
                f.write(json.dumps({"step": distiller.step, "psnr": val_psnr, "fixed_batch_loss": fixed}) + "\n")
            if writer is not None:
                writer.add_scalar("validation/psnr", val_psnr, distiller.step)
                writer.add_scalar("validation/fixed_batch_loss", fixed, distiller.step)
    bar.close()
    if writer is not None:
        writer.close()
    if distiller.accelerator.is_main_process:
        from .mappers.checkpoint import write_mapper_card

        write_mapper_card(out / "checkpoint", curve_path, out / "validation.jsonl")
        plot_curves(curve_path, out / "validation.jsonl", out / "curves.png")
    return {"steps": distiller.step, "losses": losses, "seconds": time.perf_counter() - start, "checkpoint": str(out / "checkpoint")}


def plot_curves(loss_path, validation_path, png) -> Path | None:
    """Loss (raw and a 50-step moving mean) and validation PSNR against steps, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    read = lambda p: [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()] if Path(p).is_file() else []  # noqa: E731
    losses, vals = read(loss_path), read(validation_path)
    if not losses:
        return None
    steps = np.array([r["step"] for r in losses])
    loss = np.array([r["loss"] for r in losses])
    k = min(50, len(loss))
    mean = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, axes = plt.subplots(1, 2 if vals else 1, figsize=(10 if vals else 5, 3.4), squeeze=False)
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
    plt.close(fig)
    return Path(png)


def register(sub) -> None:
    """`fourdistill distill`: train Time / View Mappers from a 4D source."""
    d = DistillConfig()
    p = sub.add_parser(
        "distill",
        help="distil a 4D source into Time / View Mappers of a frozen diffusion model",
        description="Train NeTI-style Time and View Mappers on pairs from a 4D source. Only the mappers train; "
        "the VAE, U-Net, text encoder, image encoder and IP-Adapter stay frozen. Runs data-parallel under "
        "`accelerate launch -m fourdistill.cli distill ...`.",
    )
    p.add_argument("--source", default=d.source, help="'world' (procedural scenes), a video, a D-NeRF or nerfstudio folder, or a fitted field")
    p.add_argument("--mode", default=d.mode, choices=MODES, help="which control to learn (default time)")
    p.add_argument("--model", default=None, help="diffusion stack: a local folder or hub id (default: the embedded stack)")
    p.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per micro-batch (default {d.batch_size})")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help=f"micro-batches per step (default {d.grad_accum})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--mixed-precision", default=d.mixed_precision, choices=["no", "fp16", "bf16"], help="GPU only (default no)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything random (default 0)")
    p.add_argument("--world-seeds", type=int, nargs=2, default=d.world_seeds, metavar=("START", "STOP"), help="training scenes for --source world")
    p.add_argument("--ip-scale", type=float, default=d.ip_adapter_scale, help=f"IP-Adapter scale during distillation (default {d.ip_adapter_scale}, the reference's)")
    p.add_argument("--time-alpha", type=float, default=d.time_alpha, help=f"bypass alpha of the time token (default {d.time_alpha})")
    p.add_argument("--view-alpha", type=float, default=d.view_alpha, help=f"bypass alpha of the view token (default {d.view_alpha})")
    p.add_argument("--nested-dropout", type=float, default=d.nested_dropout_p, help=f"nested-dropout probability (default {d.nested_dropout_p}; 0 turns it off)")
    p.add_argument("--view-condition", default=d.view_condition, choices=["spherical", "matrix"], help="View Mapper input (default spherical)")
    p.add_argument("--save-every", type=int, default=d.save_every, help=f"checkpoint interval in steps (default {d.save_every})")
    p.add_argument("--validate-every", type=int, default=d.validate_every, help=f"steps between validation grids in OUT/validation (default {d.validate_every}; 0: none)")
    p.add_argument("--resume", default=None, help="checkpoint folder to continue from (the same run, exactly)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is fastest for the embedded stack on a shared CPU)")
    p.set_defaults(handler=_distill_main)


def _distill_main(args) -> int:
    cfg = DistillConfig(
        source=args.source,
        mode=args.mode,
        model=args.model,
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        world_seeds=tuple(args.world_seeds),
        view_condition=args.view_condition,
        save_every=args.save_every,
        validate_every=args.validate_every,
        ip_adapter_scale=args.ip_scale,
        time_alpha=args.time_alpha,
        view_alpha=args.view_alpha,
        nested_dropout_p=args.nested_dropout,
    )
    from .cli import invoked_command, set_threads

    set_threads(args.threads)
    summary = run(cfg, resume=args.resume, command=invoked_command())
    losses = summary["losses"]
    if losses:
        k = max(1, len(losses) // 10)
        print(f"loss: first {np.mean(losses[:k]):.4f} -> last {np.mean(losses[-k:]):.4f} over {len(losses)} steps")
    print(f"checkpoint: {summary['checkpoint']} ({summary['seconds']:.0f} s)")
    return 0
