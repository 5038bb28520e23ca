"""Training the tiny stack on the world: VAE first, then U-Net + text encoder + IP-Adapter jointly.

Data: renders of training-seed scenes at random orbit cameras and times, with their captions,
rendered once per run into `data.npz` in the run folder. The image prompt is the render itself
(the same scene at the same time and camera, as IP-Adapter is trained), so the stack never
sees a time or view displacement: learning those is the mappers' job.

Phase "vae": AutoencoderKL, MSE + L1 + a small KL. Then every image is encoded once (latent mean
and log-variance; a latent is sampled per step) and the VAE's scaling factor is set to
1 / std of the latents (Stable Diffusion's 0.18215 came from the same measurement).

Phase "decoder" (only with `init_from` and `decoder_steps`): the VAE's decoder alone is trained
on, its encoder frozen, as Stable Diffusion's ft-MSE decoder was. The latents stay exactly what
they were, so the U-Net keeps working unchanged and draws through a sharper decoder.

Phase "unet": the MSE of the stack's prediction target (epsilon as SD 1.x or v as SD 2.x;
diffusion.schedule.NoiseConfig), t uniform over SD's 1000 DDPM steps,
with text dropout and image dropout (p = 0.1 each) so classifier-free guidance works on each.
The image encoder trains through the IP-Adapter path, plus a small CLIP contrastive term
between its projected embedding and the text encoder's pooled output.

`init_from` starts the U-Net phase from another stack's weights (its sizes, VAE and tokenizer),
e.g. to fine-tune a stack with another prediction target, as SD 2.0-v was from an epsilon model.

Checkpoints (`checkpoint/`: the stack in its shipped layout, optimizer and RNG states) are
written atomically every `checkpoint_every` steps; `--resume` continues from the last one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataConfig, render_world_set
from .stack import StackConfig


@dataclass
class TrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    vae_steps: int = 3000
    vae_batch: int = 16
    vae_lr: float = 5e-4
    vae_kl_weight: float = 1e-6  # "a little KL": latents stay close to the reconstruction optimum
    vae_l1_weight: float = 0.5  # L1 next to the MSE: sharper edges on the small objects
    # the VAE phases weigh each object pixel's error 1 + this (sky and ground: 1): objects are
    # under a tenth of the pixels but all of what the captions name
    vae_object_weight: float = 0.0
    # the VAE phases end with a linear decay of the learning rate to zero over this fraction of
    # their steps
    vae_cooldown_fraction: float = 0.3
    # with init_from: train the stack's VAE decoder (encoder frozen, so the latents and the
    # U-Net's work on them are unchanged) for this many steps before the U-Net phase
    decoder_steps: int = 0
    # with init_from: train that stack's whole VAE on (encoder too, then the scaling factor is
    # measured again) for this many steps; the latents move, so the U-Net phase has to follow
    vae_finetune_steps: int = 0
    unet_steps: int = 1300
    batch: int = 32
    lr: float = 8e-4
    warmup_steps: int = 100
    # the last `cooldown_steps` U-Net steps anneal the learning rate linearly to zero (a
    # warmup-stable-decay schedule: the constant stage can be extended by resuming, then one
    # cool-down ends the run); 0 keeps it constant to the end
    cooldown_steps: int = 0
    weight_decay: float = 1e-2
    text_dropout: float = 0.1  # classifier-free guidance on text (IP-Adapter trains with 0.05 each)
    image_dropout: float = 0.1  # and on the image prompt
    contrastive_weight: float = 0.1
    checkpoint_every: int = 100
    sample_every: int = 250
    threads: int = 1  # torch threads: on a shared CPU one thread beats two by a wide margin
    init_from: str | None = None  # a stack folder to start the U-Net phase from (no VAE phase)
    init_ip_tokens: int | None = None  # with init_from: grow/shrink the Resampler to this many image tokens
    # a stack folder whose trained VAE a fresh run takes instead of training one (no VAE phase);
    # everything else is built fresh at this config's sizes, e.g. a wider U-Net
    vae_from: str | None = None
    # this fraction of each batch draws its timestep from [high_noise_start, 1000) instead of
    # [0, 1000): the noisiest steps, where only the prompts can say where things are, get more of
    # the training (docs/teachers.md)
    high_noise_fraction: float = 0.0
    high_noise_start: int = 700
    # this fraction of each batch (drawn from the batch's end) is trained at timesteps in
    # [self_input_start, self_input_end) on the input the sampler gives there: self_input_jumps
    # DDIM steps from pure noise, each from the U-Net's own clean estimate, with the true image as
    # the target. Otherwise the later steps only ever see the true layout in their input and
    # learn to take it from there rather than from the prompts (docs/teachers.md)
    self_input_fraction: float = 0.0
    self_input_start: int = 200
    self_input_end: int = 800
    self_input_jumps: int = 1
    # score those samples on the clean latents their output implies instead of on the prediction
    # target: the target's weight on the clean-image error grows as 1 / (1 - abar), over 1000 at
    # t = 0, and a self-input's missing detail cannot be predicted, so near t = 0 it would swamp
    # the batch
    self_input_clean_loss: bool = False
    # never drop the image prompt of a self-input sample (see prompt_dropout)
    self_input_keep_image: bool = False
    # train only the image prompt's path (see unet_parameters): text alone keeps what it drew
    image_path_only: bool = False
    # with init_from: each step adds round(preserve_text_fraction * batch) text-alone samples
    # (no image prompt) on the input the init stack's own sampler gives (self_input_jumps DDIM
    # steps from pure noise, timesteps over [0, 1000)), scored against the init stack's output
    # there with weight preserve_text_weight: the image prompt learns to hold its layout while
    # text alone keeps drawing what it drew (text_preservation_batch)
    preserve_text_fraction: float = 0.0
    preserve_text_weight: float = 1.0
    # > 0: hold what classifier-free guidance at this scale makes of text alone, not the caption's
    # prediction alone. The input is then the init stack's guided sampler, and the term scores
    # the guided prediction and the unconditional one (empty caption and image prompt): guidance
    # multiplies any drift in their difference by the scale.
    preserve_text_guidance: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        if not 0.0 <= self.high_noise_fraction <= 1.0 or not 0 <= self.high_noise_start < 1000:
            raise ValueError("TrainConfig: high_noise_fraction must be in [0, 1] and high_noise_start in [0, 1000)")
        if not 0.0 <= self.self_input_fraction <= 1.0 or not 0 <= self.self_input_start < self.self_input_end <= 1000:
            raise ValueError("TrainConfig: self_input_fraction must be in [0, 1] and 0 <= self_input_start < self_input_end <= 1000")
        if self.self_input_jumps < 1:
            raise ValueError("TrainConfig: self_input_jumps must be >= 1")
        if round(self.high_noise_fraction * self.batch) + round(self.self_input_fraction * self.batch) > self.batch:
            raise ValueError("TrainConfig: high_noise_fraction + self_input_fraction must not exceed 1")
        if self.preserve_text_fraction < 0.0 or self.preserve_text_weight < 0.0 or self.preserve_text_guidance < 0.0:
            raise ValueError("TrainConfig: preserve_text_fraction, preserve_text_weight and preserve_text_guidance must be >= 0")
        if self.preserve_text_fraction and self.init_from is None:
            raise ValueError("TrainConfig: preserve_text_fraction holds text alone to the stack it starts from; it needs init_from")
        if self.init_ip_tokens is not None and (self.init_from is None or self.init_ip_tokens < 1):
            raise ValueError("TrainConfig: init_ip_tokens needs init_from and must be >= 1")
        for name in ("decoder_steps", "vae_finetune_steps"):
            if getattr(self, name) < 0 or (getattr(self, name) and self.init_from is None):
                raise ValueError(f"TrainConfig: {name} fine-tunes the VAE of the stack given by init_from (a fresh run trains the whole VAE: vae_steps); it needs init_from and must be >= 0")
        if self.vae_from is not None and self.init_from is not None:
            raise ValueError("TrainConfig: vae_from and init_from exclude each other (init_from brings its own VAE)")
        if self.decoder_steps and self.vae_finetune_steps:
            raise ValueError("TrainConfig: decoder_steps and vae_finetune_steps exclude each other (the decoder alone, or the whole VAE)")
        if not 0.0 <= self.vae_cooldown_fraction <= 1.0 or self.vae_l1_weight < 0.0 or self.vae_object_weight < 0.0:
            raise ValueError("TrainConfig: vae_cooldown_fraction must be in [0, 1], vae_l1_weight and vae_object_weight >= 0")
        if self.unet_steps < 0 or self.vae_steps < 0:
            raise ValueError("TrainConfig: unet_steps and vae_steps must be >= 0")
        self.data.world()  # checks data.n_objects

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        data = DataConfig(**d.pop("data", {}))
        stack = StackConfig.from_dict(d.pop("stack", {}))
        return cls(data=data, stack=stack, **d)


# ----------------------------------------------------------------------------------------- data


def load_or_render(run: Path, cfg: TrainConfig) -> dict:
    from ...io import atomic_path

    path = run / "data.npz"
    if path.exists():
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        if len(data["seeds"]) != cfg.data.n_scenes or data["images"].shape[1] != cfg.stack.resolution:
            raise ValueError(f"{path}: cached renders do not match the config (delete it to re-render)")
        if cfg.vae_object_weight and "objects" not in data:
            raise ValueError(f"{path}: cached renders have no object masks, which vae_object_weight needs (delete it to re-render)")
        return data
    data = render_world_set(cfg.data, cfg.stack.resolution, cfg.seed, mode="images")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)
    return data


# ---------------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    import random

    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import random

    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def write_checkpoint(run: Path, phase: str, step: int, stack, optimizer, extra: dict | None = None) -> None:
    """run/checkpoint/: the stack in its shipped layout + trainer.pt (optimizer, RNG, step).
    Atomic: a crash mid-write leaves the previous checkpoint intact."""
    import torch

    from ...io import atomic_dir
    from .stack import save_stack

    with atomic_dir(run / "checkpoint", overwrite=True) as tmp:
        save_stack(stack, tmp / "stack")
        torch.save({"phase": phase, "step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(), **(extra or {})}, tmp / "trainer.pt")


def resize_image_tokens(latents, n: int, seed: int = 0):
    """The Resampler's learned queries (1, m, D) -> (1, n, D): each old query repeated in turn,
    plus a little noise (2% of their spread) so the copies can part ways; the first m queries
    keep their values when growing."""
    import torch

    m = latents.shape[1]
    out = latents[:, torch.arange(n) % m].clone()
    if n > m:
        g = torch.Generator().manual_seed(seed)
        out[:, m:] += 0.02 * latents.std() * torch.randn(out[:, m:].shape, generator=g, dtype=out.dtype)
    return out


def load_stack_for_training(folder: Path, cfg: StackConfig, resize_tokens: bool = False):
    """A Stack (trainable modules) from a saved folder, with its IP-Adapter installed.
    resize_tokens: fit the Resampler's queries to cfg.ip_adapter.num_tokens (resize_image_tokens)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    from .ip_adapter import install_ip_adapter, read_ip_adapter_file
    from .stack import IMAGE_ENCODER_SUBFOLDER, IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT_NAME, Stack

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    state = read_ip_adapter_file(folder / IP_ADAPTER_SUBFOLDER / IP_ADAPTER_WEIGHT_NAME)
    if resize_tokens and state["image_proj"]["latents"].shape[1] != cfg.ip_adapter.num_tokens:
        state["image_proj"]["latents"] = resize_image_tokens(state["image_proj"]["latents"], cfg.ip_adapter.num_tokens)
    image_proj = install_ip_adapter(unet, state)
    return Stack(
        config=cfg,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        unet=unet,
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(folder / IP_ADAPTER_SUBFOLDER / IMAGE_ENCODER_SUBFOLDER),
        image_proj=image_proj,
    )


def _init_stack_config(folder: Path, requested: StackConfig, ip_tokens: int | None = None) -> StackConfig:
    """The sizes of the stack in `folder` (what its weights fit) and, if given, another number of
    image tokens. Its prediction target and schedule ending too, unless `requested` asks for
    something other than the default (SD 1.x's epsilon): fine-tuning a v stack without saying so
    keeps it v."""
    import dataclasses

    from ...diffusion.schedule import NoiseConfig
    from .load import check_stack_folder
    from .stack import read_stack_config

    check_stack_folder(folder)  # a clear error for anything that is not a stack folder
    if not (folder / "fourdistill_stack.json").is_file():
        raise FileNotFoundError(f"{folder / 'fourdistill_stack.json'}: init_from needs a stack trained by this command (its sizes are read from that file)")
    found = read_stack_config(folder)
    tokens = dataclasses.replace(found.ip_adapter, num_tokens=ip_tokens) if ip_tokens else found.ip_adapter
    noise = found.noise if requested.noise == NoiseConfig() else requested.noise
    return dataclasses.replace(found, noise=noise, ip_adapter=tokens)


# -------------------------------------------------------------------------------------- trainer


def _lr_lambda(warmup: int, total: int | None = None, cooldown: int = 0):
    """Learning-rate factor at a step: linear warmup, constant, then (with `cooldown` > 0) linear
    decay to zero over the last `cooldown` of `total` steps."""

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / max(1, warmup))
        if cooldown > 0 and total is not None and step >= total - cooldown:
            f *= max(0.0, (total - step) / cooldown)
        return f

    return factor


def unet_parameters(stack, image_path_only: bool = False) -> list:
    """What the U-Net phase trains, in a fixed order (the optimizer state depends on it).
    image_path_only: only the image prompt's path (image encoder, Resampler, the decoupled
    key/value projections), as IP-Adapter itself is trained on a frozen U-Net; the rest is
    frozen (requires_grad off), so text alone generates exactly what it did before."""
    if image_path_only:
        params = list(stack.unet.encoder_hid_proj.parameters())
        params += [p for proc in stack.ip_attn_processors().values() for p in proc.parameters()]
        params += list(stack.image_encoder.parameters())
        keep = {id(p) for p in params}
        for module in (stack.unet, stack.text_encoder):
            for p in module.parameters():
                p.requires_grad_(id(p) in keep)
    else:
        params = list(stack.unet.parameters())  # includes the Resampler (encoder_hid_proj)
        params += [p for proc in stack.ip_attn_processors().values() for p in proc.parameters() if not any(p is q for q in params)]
        params += list(stack.text_encoder.parameters()) + list(stack.image_encoder.parameters())
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _local_stack_folder(model: str, field_name: str) -> str:
    """'embedded' or a local stack folder, as a path string; a hub id is refused (training needs files)."""
    from .load import resolve_model

    where, local = resolve_model(model)  # "embedded" -> the shipped folder
    if not local:
        raise ValueError(f"{field_name} {model!r}: pass 'embedded' or a local stack folder")
    return str(where)


def train(
    run,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    extend_unet_steps: int | None = None,
    cooldown_steps: int | None = None,
    sample_grid=None,
) -> Path:
    """Train (or resume) a stack into `run`; the finished stack is `run/stack`. Returns it.

    sample_grid(stack, path, seed=, world=): writes a PNG of samples every `sample_every` U-Net
    steps and at the end, as run/samples/step_NNNNNN.png (None: no samples). The command passes
    fourdistill.evaluate.stack.write_sample_grid; sampling on held-out scenes is evaluation,
    which this package does not import.

    extend_unet_steps (resume only): train the U-Net to this many steps instead of the run's
    planned count (the learning rate is constant after warmup, so a run extends cleanly).
    cooldown_steps (resume only): end the extended run with this many steps of linear decay to
    zero; the decay must start at or after the step the run resumes from."""
    import torch

    from ...io import write_json
    from .stack import build_stack, read_stack_config, save_stack
    from .tokenizer import build_tokenizer

    run = Path(run)
    cfg_path = run / "train_config.json"
    trainer_path = run / "checkpoint" / "trainer.pt"
    state = torch.load(trainer_path, weights_only=False) if resume and trainer_path.exists() else None
    if resume:
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: nothing to resume (no training config in {run})")
        cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
        if extend_unet_steps is not None:
            if extend_unet_steps < cfg.unet_steps:
                raise ValueError(f"--unet-steps {extend_unet_steps} is below the run's {cfg.unet_steps}; a resumed run can only be extended")
            cfg.unet_steps = extend_unet_steps
        if cooldown_steps is not None:
            done = int(state["step"]) if state is not None and state["phase"] == "unet" else 0  # a VAE-phase checkpoint has no U-Net steps yet
            if cooldown_steps < 0 or cfg.unet_steps - cooldown_steps < done:
                raise ValueError(
                    f"--cooldown {cooldown_steps}: the decay would start at U-Net step {cfg.unet_steps - cooldown_steps}, "
                    f"before step {done} where {run} resumes; extend --unet-steps or shorten the cool-down"
                )
            cfg.cooldown_steps = cooldown_steps
        if extend_unet_steps is not None or cooldown_steps is not None:
            write_json(cfg_path, cfg.to_dict())
    else:
        cfg = cfg or TrainConfig()
        if (run / "checkpoint").exists():
            raise FileExistsError(f"{run} already holds a training run; pass --resume to continue it or choose another folder")
        if cfg.init_from is not None:
            cfg.init_from = _local_stack_folder(cfg.init_from, "init_from")
            cfg.stack = _init_stack_config(Path(cfg.init_from), cfg.stack, cfg.init_ip_tokens)
        if cfg.vae_from is not None:
            cfg.vae_from = _local_stack_folder(cfg.vae_from, "vae_from")
            given = read_stack_config(Path(cfg.vae_from))
            cfg.stack.vae, cfg.stack.resolution = given.vae, given.resolution
        run.mkdir(parents=True, exist_ok=True)
        write_json(cfg_path, cfg.to_dict())
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    data = load_or_render(run, cfg)
    if state is not None:
        stack = load_stack_for_training(run / "checkpoint" / "stack", cfg.stack)
        _set_rng_state(state["rng"])
        log(f"resuming phase {state['phase']} at step {state['step']}")
    elif cfg.init_from is not None:
        stack = load_stack_for_training(cfg.init_from, cfg.stack, resize_tokens=True)
        state = {"phase": "decoder" if cfg.decoder_steps else "vae" if cfg.vae_finetune_steps else "unet", "step": 0, "wall": {}}
        log(f"starting from the stack in {cfg.init_from}")
    else:
        tokenizer = build_tokenizer(run / "tokenizer")
        stack = build_stack(cfg.stack, tokenizer, seed=cfg.seed)
        if cfg.vae_from is not None:
            from diffusers import AutoencoderKL

            stack.vae = AutoencoderKL.from_pretrained(Path(cfg.vae_from) / "vae")
            state = {"phase": "unet", "step": 0, "wall": {}}
            log(f"the VAE comes from {cfg.vae_from}: no VAE phase")

    started = time.time()
    wall = dict(state.get("wall", {})) if state else {}
    if state is None or state["phase"] in ("vae", "decoder"):
        decoder_only = state is not None and state["phase"] == "decoder"
        _train_vae(run, cfg, stack, data, state, progress, log, wall, decoder_only)  # adds its time to wall
        state = None
        write_checkpoint(run, "unet", 0, stack, _fresh_unet_optimizer(stack, cfg), {"wall": wall})
    _train_unet(run, cfg, stack, data, state, progress, log, wall, sample_grid)  # adds its time to wall["unet_s"]
    save_stack(stack, run / "stack")
    write_json(run / "train_summary.json", {"config": cfg.to_dict(), "wall_s": wall, "this_invocation_s": time.time() - started})
    times = ", ".join(f"{name} {wall[key] / 60:.1f} min" for name, key in (("vae", "vae_s"), ("decoder", "decoder_s"), ("unet", "unet_s")) if key in wall)
    log(f"done: {run / 'stack'} ({times or 'nothing left to train'})")
    return run / "stack"


def _images_tensor(data: dict, idx: np.ndarray):
    import torch

    return torch.from_numpy(data["images"][idx]).float().div_(255.0).permute(0, 3, 1, 2).contiguous()


def _train_vae(run: Path, cfg: TrainConfig, stack, data: dict, state, progress: bool, log, wall: dict, decoder_only: bool = False) -> None:
    """Phase "vae" (the whole AutoencoderKL, then its scaling factor; vae_steps from scratch, or
    vae_finetune_steps from init_from's VAE) or, with `decoder_only`, phase "decoder" (encoder
    frozen: the latents, and so the scaling factor, do not move).
    Adds its time to wall["vae_s"] or wall["decoder_s"]."""
    import torch
    import torch.nn.functional as F
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    phase, steps = ("decoder", cfg.decoder_steps) if decoder_only else ("vae", cfg.vae_finetune_steps if cfg.init_from else cfg.vae_steps)
    wall_key = f"{phase}_s"
    vae = stack.vae.train()
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    else:
        params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if state is not None and state["step"] > 0:
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    cooldown = round(cfg.vae_cooldown_fraction * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, steps, cooldown), last_epoch=-1)
    for _ in range(start):
        sched.step()
    rng = np.random.default_rng([cfg.seed, 0xAE if phase == "vae" else 0xDEC, start])
    writer = SummaryWriter(str(run / "tensorboard"))
    n = len(data["images"])
    bar = tqdm(range(start, steps), desc=phase, disable=not progress, initial=start, total=steps)
    t_begin, before = time.time(), wall.get(wall_key, 0.0)
    for step in bar:
        idx = rng.integers(0, n, cfg.vae_batch)
        x = _images_tensor(data, idx) * 2.0 - 1.0
        with torch.set_grad_enabled(not decoder_only):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        loss = vae_reconstruction_loss(recon, x, data["objects"][idx] if cfg.vae_object_weight else None, cfg)
        if not decoder_only:
            kl = posterior.kl().mean()
            loss = loss + cfg.vae_kl_weight * kl
            writer.add_scalar("vae/kl", kl.item(), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))  # images in [-1, 1]: peak-to-peak 2
        bar.set_postfix(mse=f"{mse.item():.4f}", psnr=f"{psnr:.1f}")
        writer.add_scalar(f"{phase}/mse", mse.item(), step)
        writer.add_scalar(f"{phase}/psnr", psnr, step)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            wall[wall_key] = before + time.time() - t_begin
            write_checkpoint(run, phase, step + 1, stack, opt, {"wall": wall})
    wall[wall_key] = before + time.time() - t_begin
    writer.flush()
    vae.eval().requires_grad_(True)
    if decoder_only:
        log(f"decoder done: {steps} steps, the encoder and scaling factor ({vae.config.scaling_factor:.4f}) unchanged")
        return
    factor = set_vae_scaling_factor(stack.vae, data)
    writer.add_scalar("vae/scaling_factor", factor, steps)
    log(f"vae done: scaling factor {factor:.4f}")


def vae_reconstruction_loss(recon, x, objects, cfg: TrainConfig):
    """MSE + vae_l1_weight * L1 of a reconstruction, each pixel weighted 1 + vae_object_weight
    where `objects` (B, H, W) bool marks an object (None: every pixel 1). The weights are
    normalised to mean 1 over the batch, so the loss keeps its scale (and learning rate)."""
    import torch

    err = recon - x
    weight = 1.0
    if objects is not None:
        weight = 1.0 + cfg.vae_object_weight * torch.as_tensor(objects).float()[:, None]
        weight = weight / weight.mean()
    return (weight * err.square()).mean() + cfg.vae_l1_weight * (weight * err.abs()).mean()


def set_vae_scaling_factor(vae, data: dict, n: int = 1024, seed: int = 0) -> float:
    """Set the VAE's scaling_factor to 1 / std of latent means over `n` training images, so the
    U-Net sees unit-variance latents (how SD's 0.18215 was chosen). Returns it."""
    import torch

    idx = np.random.default_rng(seed).choice(len(data["images"]), size=min(n, len(data["images"])), replace=False)
    with torch.no_grad():
        means = torch.cat([vae.encode(_images_tensor(data, idx[i : i + 128]) * 2 - 1).latent_dist.mean for i in range(0, len(idx), 128)])
    factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


def encode_latents(vae, data: dict, batch: int = 128):
    """Latent mean and std (N, 4, h, w) of every training image, unscaled."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(data["images"]), batch):
            dist = vae.encode(_images_tensor(data, np.arange(i, min(i + batch, len(data["images"])))) * 2 - 1).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def contrastive_loss(image_embeds, text_embeds, caption_ids, temperature: float = 0.07):
    """Symmetric CLIP loss; rows sharing a caption are all positives. temperature 0.07: CLIP's
    initial value. image_embeds, text_embeds (B, C); caption_ids (B,)."""
    import torch.nn.functional as F

    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T / temperature
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def training_timesteps(cfg: TrainConfig, n_train: int, gen):
    """cfg.batch training timesteps: diffusion.schedule.sample_timesteps (uniform over
    [0, n_train), the first cfg.high_noise_fraction of them over [cfg.high_noise_start, n_train)),
    then the last self_input_count(cfg) uniform over [cfg.self_input_start, cfg.self_input_end)."""
    import torch

    from ...diffusion.schedule import sample_timesteps

    t = sample_timesteps(cfg.batch, n_train, gen, cfg.high_noise_fraction, cfg.high_noise_start)
    k = self_input_count(cfg)
    if k > 0:
        t[cfg.batch - k :] = torch.randint(cfg.self_input_start, min(cfg.self_input_end, n_train), (k,), generator=gen)
    return t


def prompt_dropout(cfg: TrainConfig, gen):
    """Which samples of a batch drop their caption and which their image prompt: (drop_text,
    drop_image), boolean (batch,). With cfg.self_input_keep_image the self-input samples (the
    batch's last self_input_count) keep their image prompt: only an image prompt pins the layout
    they teach the U-Net to keep; from text alone the first step is a blur, and training the
    later steps to turn that blur into one particular image teaches them to blur. The draws are
    the same either way, so the rest of the run's randomness does not move."""
    import torch

    drop_text = torch.rand(cfg.batch, generator=gen) < cfg.text_dropout
    drop_image = torch.rand(cfg.batch, generator=gen) < cfg.image_dropout
    k = self_input_count(cfg)
    if cfg.self_input_keep_image and k:
        drop_image[cfg.batch - k :] = False
    return drop_text, drop_image


def self_input_count(cfg: TrainConfig) -> int:
    """How many samples at the end of each batch train on the sampler's input (self_input_batch)."""
    return int(round(cfg.self_input_fraction * cfg.batch))


def sampler_input(unet, noise_scheduler, noise, timesteps, text_states, image_tokens, jumps: int = 1, guidance: float = 0.0, uncond_states=None):
    """What the sampler feeds `unet` at `timesteps`: the sampler starts from pure noise x_T =
    noise, and `jumps` deterministic DDIM steps (eta 0) at evenly spaced timesteps, each from
    the U-Net's own clean estimate, take it down to each sample's timestep. The first estimate
    holds what the prompts alone say (the layout of an image prompt, blurred). With guidance > 0
    each step uses the classifier-free guided prediction against `uncond_states` (the empty
    caption's states; the image prompt is the same on both sides)."""
    import torch

    from ...diffusion.guidance import predict
    from ...diffusion.schedule import alphas_at, predicted_clean_latents

    if jumps < 1:
        raise ValueError(f"sampler_input: jumps must be >= 1, got {jumps}")
    if guidance > 0 and uncond_states is None:
        raise ValueError("sampler_input: guidance needs uncond_states")
    last = noise_scheduler.config.num_train_timesteps - 1
    x, now = noise, torch.full_like(timesteps, last)
    with torch.no_grad():
        for j in range(1, jumps + 1):
            pred = predict(unet, x, now, text_states, image_tokens, guidance, uncond_states)
            estimate = predicted_clean_latents(noise_scheduler, x, pred, now)
            a = alphas_at(noise_scheduler, now, x)
            # the noise the step implies; from pure noise (abar 0 at a zero-SNR end) it is x itself
            eps = noise if j == 1 else (x - a.sqrt() * estimate) / (1 - a).sqrt()
            nxt = timesteps if j == jumps else last - torch.div((last - timesteps) * j, jumps, rounding_mode="floor")
            b = alphas_at(noise_scheduler, nxt, x)
            x, now = b.sqrt() * estimate + (1 - b).sqrt() * eps, nxt
    return x


def self_input_batch(unet, noise_scheduler, latents, noise, timesteps, text_states, image_tokens, jumps: int = 1):
    """Inputs and targets that teach the U-Net to keep what its earlier steps drew: the input
    the sampler gives at each timestep (sampler_input), and as target the output that denoises
    it to the true `latents`. Returns (noisy, target)."""
    from ...diffusion.schedule import target_for_clean

    x = sampler_input(unet, noise_scheduler, noise, timesteps, text_states, image_tokens, jumps)
    return x, target_for_clean(noise_scheduler, x, latents, timesteps)


def text_preservation_batch(frozen, noise_scheduler, ids, noise, timesteps, jumps: int = 1, guidance: float = 0.0, empty_ids=None):
    """Inputs and targets that hold text alone where the `frozen` stack had it: the frozen
    stack's sampler input at `timesteps` from the captions `ids` with the pipeline's empty image
    prompt (empty_image_tokens), and its own output there. With guidance > 0 the sampler is
    guided against the empty caption `empty_ids` (1, L), and the targets are the frozen stack's
    guided and unconditional outputs. Returns (noisy, target), or (noisy, guided, uncond)."""
    import torch

    from ...diffusion.guidance import guide, predict

    with torch.no_grad():
        text = frozen.text_encoder(ids).last_hidden_state
        tokens = empty_image_tokens(frozen.image_encoder, len(ids))
        if guidance <= 0:
            x = sampler_input(frozen.unet, noise_scheduler, noise, timesteps, text, tokens, jumps)
            return x, predict(frozen.unet, x, timesteps, text, tokens)
        if empty_ids is None:
            raise ValueError("text_preservation_batch: guidance needs empty_ids")
        uncond = frozen.text_encoder(empty_ids).last_hidden_state.expand(len(ids), -1, -1)
        x = sampler_input(frozen.unet, noise_scheduler, noise, timesteps, text, tokens, jumps, guidance, uncond)
        both = predict(frozen.unet, torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([text, uncond]), torch.cat([tokens, tokens]))
        c, u = both.chunk(2)
    return x, guide(c, u, guidance), u


def empty_image_tokens(image_encoder, n: int):
    """The pipeline's unconditional image prompt, the encoder's tokens for all-zero pixels, for
    n samples: (n, 1 + patches, C)."""
    import torch

    size = image_encoder.config.image_size
    return image_encoder(torch.zeros(1, 3, size, size), output_hidden_states=True).hidden_states[-2].expand(n, -1, -1)


def preserve_text_count(cfg: TrainConfig) -> int:
    """How many text-alone samples each step adds to hold text alone in place (text_preservation_batch)."""
    return int(round(cfg.preserve_text_fraction * cfg.batch))


def _fresh_unet_optimizer(stack, cfg: TrainConfig):
    import torch

    return torch.optim.AdamW(unet_parameters(stack, cfg.image_path_only), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _train_unet(run: Path, cfg: TrainConfig, stack, data: dict, state, progress: bool, log, wall: dict, sample_grid=None) -> None:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from ...diffusion.guidance import guide
    from ...diffusion.schedule import clean_error_weight, prediction_target, training_scheduler
    from .ip_adapter import clip_pixel_values

    if cfg.unet_steps == 0:  # e.g. a decoder fine-tune alone; --resume --unet-steps N can add U-Net steps later
        return
    accelerator = Accelerator(cpu=True)
    stack.vae.eval().requires_grad_(False)
    lat_mean, lat_std = encode_latents(stack.vae, data)
    scale = stack.vae.config.scaling_factor
    tok = stack.tokenizer
    max_len = stack.text_encoder.config.max_position_embeddings
    caption_ids = tok(list(data["captions"]), padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    empty_ids = tok([""], padding="max_length", max_length=max_len, return_tensors="pt").input_ids
    scene_of = torch.from_numpy(data["scene"])

    params = unet_parameters(stack, cfg.image_path_only)
    opt = _fresh_unet_optimizer(stack, cfg)
    start = 0
    if state is not None and state["step"] > 0:
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.unet_steps, cfg.cooldown_steps))
    for _ in range(start):
        sched.step()
    opt, sched = accelerator.prepare(opt, sched)
    noise_scheduler = training_scheduler(cfg.stack.noise)
    rng = np.random.default_rng([cfg.seed, 0x0E7, start])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    writer = SummaryWriter(str(run / "tensorboard"))
    for m in (stack.unet, stack.text_encoder, stack.image_encoder):
        m.train()
    n = len(data["images"])
    k_self = self_input_count(cfg)
    k_keep = preserve_text_count(cfg)
    g_keep = cfg.preserve_text_guidance
    n_held = k_keep * (2 if g_keep > 0 else 1)  # a guided hold runs each sample on its caption and on the empty one
    if k_keep:  # text alone is held to the stack the run started from
        frozen = load_stack_for_training(cfg.init_from, cfg.stack, resize_tokens=True)
        for m in (frozen.unet, frozen.text_encoder, frozen.image_encoder):
            m.eval().requires_grad_(False)
    bar = tqdm(range(start, cfg.unet_steps), desc="unet", disable=not progress, initial=start, total=cfg.unet_steps)
    t_last = t_begin = time.time()
    unet_s_before = wall.get("unet_s", 0.0)  # U-Net time before this resume
    for step in bar:
        idx = rng.integers(0, n, cfg.batch)
        idx_t = torch.from_numpy(idx)
        latents = (lat_mean[idx_t] + lat_std[idx_t] * torch.randn(lat_mean[idx_t].shape, generator=gen)) * scale
        noise = torch.randn(latents.shape, generator=gen)
        t = training_timesteps(cfg, noise_scheduler.config.num_train_timesteps, gen)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        target = prediction_target(noise_scheduler, latents, noise, t)
        drop_text, drop_image = prompt_dropout(cfg, gen)
        ids = torch.where(drop_text[:, None], empty_ids, caption_ids[scene_of[idx_t]])
        text_out = stack.text_encoder(ids)
        pixels = clip_pixel_values(_images_tensor(data, idx))
        # the pipeline's unconditional image prompt is the encoding of an all-zero pixel tensor
        pixels = torch.where(drop_image[:, None, None, None], torch.zeros_like(pixels), pixels)
        vision = stack.image_encoder(pixels, output_hidden_states=True)
        tokens = vision.hidden_states[-2]
        if k_self:
            s = slice(cfg.batch - k_self, None)
            own, own_target = self_input_batch(
                stack.unet, noise_scheduler, latents[s], noise[s], t[s], text_out.last_hidden_state[s].detach(), tokens[s].detach(),
                cfg.self_input_jumps,
            )
            noisy, target = torch.cat([noisy[: cfg.batch - k_self], own]), torch.cat([target[: cfg.batch - k_self], own_target])
        text_states, unet_t = text_out.last_hidden_state, t
        if k_keep:
            keep_t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (k_keep,), generator=gen)
            keep_noise = torch.randn((k_keep, *latents.shape[1:]), generator=gen)
            keep_scenes = torch.from_numpy(rng.integers(0, n, k_keep))
            keep_ids = torch.where((torch.rand(k_keep, generator=gen) < cfg.text_dropout)[:, None], empty_ids, caption_ids[scene_of[keep_scenes]])
            held = text_preservation_batch(frozen, noise_scheduler, keep_ids, keep_noise, keep_t, cfg.self_input_jumps, g_keep, empty_ids)
            keep_noisy = held[0]
            keep_states = stack.text_encoder(keep_ids).last_hidden_state
            if g_keep > 0:  # the same inputs again on the empty caption: the unconditional side of the guidance
                keep_noisy, keep_t = torch.cat([keep_noisy, keep_noisy]), torch.cat([keep_t, keep_t])
                keep_states = torch.cat([keep_states, stack.text_encoder(empty_ids).last_hidden_state.expand(k_keep, -1, -1)])
            noisy, unet_t = torch.cat([noisy, keep_noisy]), torch.cat([t, keep_t])
            text_states = torch.cat([text_states, keep_states])
            tokens = torch.cat([tokens, empty_image_tokens(stack.image_encoder, n_held)])
        pred = stack.unet(noisy, unet_t, encoder_hidden_states=text_states, added_cond_kwargs={"image_embeds": [tokens[:, None]]}).sample
        preserve = None
        if k_keep and g_keep > 0:
            cond, uncond = pred[cfg.batch :].chunk(2)
            preserve = F.mse_loss(guide(cond, uncond, g_keep), held[1]) + F.mse_loss(uncond, held[2])
        elif k_keep:
            preserve = F.mse_loss(pred[cfg.batch :], held[1])
        pred = pred[: cfg.batch]
        if k_self and cfg.self_input_clean_loss:
            per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
            w = torch.ones_like(per)
            w[cfg.batch - k_self :] = clean_error_weight(noise_scheduler, t[cfg.batch - k_self :], per[cfg.batch - k_self :])
            diffusion = (w * per).mean()
        else:
            diffusion = F.mse_loss(pred, target)
        keep = ~(drop_text | drop_image)
        clip = contrastive_loss(vision.image_embeds[keep], text_out.pooler_output[keep], scene_of[idx_t][keep]) if keep.sum() > 1 else diffusion * 0
        loss = diffusion + cfg.contrastive_weight * clip
        if preserve is not None:
            loss = loss + cfg.preserve_text_weight * preserve
            writer.add_scalar("unet/preserve_text", preserve.item(), step)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        now = time.time()
        postfix = {"loss": f"{diffusion.item():.4f}", "clip": f"{clip.item():.3f}"}
        if preserve is not None:
            postfix["keep"] = f"{preserve.item():.4f}"
        bar.set_postfix(**postfix, samples_s=f"{(cfg.batch + n_held) / max(now - t_last, 1e-9):.1f}")
        t_last = now
        writer.add_scalar("unet/loss", diffusion.item(), step)
        writer.add_scalar("unet/contrastive", clip.item(), step)
        writer.add_scalar("unet/lr", sched.get_last_lr()[0], step)
        done = step + 1
        if sample_grid is not None and (done % cfg.sample_every == 0 or done == cfg.unet_steps):
            sample_grid(stack, run / "samples" / f"step_{done:06d}.png", seed=cfg.seed, world=cfg.data.world())
            for m in (stack.unet, stack.text_encoder, stack.image_encoder):
                m.train()
        wall["unet_s"] = unet_s_before + time.time() - t_begin
        if done % cfg.checkpoint_every == 0 or done == cfg.unet_steps:
            write_checkpoint(run, "unet", done, stack, opt, {"wall": wall})
    writer.flush()
    for m in (stack.unet, stack.text_encoder, stack.image_encoder):
        m.eval()


def stack_pipeline(stack):
    """A StableDiffusionPipeline over the in-memory stack (IP-Adapter installed), for sampling."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    from ...diffusion.schedule import inference_scheduler

    size = stack.config.resolution
    pipe = StableDiffusionPipeline(
        vae=stack.vae,
        text_encoder=stack.text_encoder,
        tokenizer=stack.tokenizer,
        unet=stack.unet,
        scheduler=inference_scheduler(stack.config.noise),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        image_encoder=stack.image_encoder,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe

