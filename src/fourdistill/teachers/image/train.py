"""Training the image teacher on the world: VAE, then U-Net + text encoder + IP-Adapter jointly.

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

`init_from` starts from another stack's weights (its sizes, VAE and tokenizer; no VAE phase),
e.g. to fine-tune a stack with another prediction target, as SD 2.0-v was from an epsilon model;
`vae_from` builds a fresh stack around another stack's trained VAE.

The loop, checkpoints, logs, card and the --resume rule are the engine's (fourdistill.engine).
Run layout under `run`:

    config.json               the TrainConfig (compared on --resume; unet_steps, cooldown_steps,
                              sample_every and the engine's intervals may change)
    data.npz                  the training renders
    tokenizer/                the tokenizer a fresh stack was built with
    checkpoint/stack/         the stack in its shipped layout (load_stack reads it)
    checkpoint/checkpoint.json   phase ("vae", "decoder" or "unet"), step within it, wall_s
    checkpoint/optimizer.pt   the phase's optimizer state
    checkpoint/train_state.pt step, wall_s, RNG states (torch, numpy, python, the phase's own
                              generators), each phase's wall time
    vae.jsonl, decoder.jsonl, unet.jsonl   {"step", "wall_s", losses} per step of each phase
    tensorboard/              the same scalars ("vae/mse", "unet/loss", ...)
    samples/step_NNNNNN.png   sample grids every `sample_every` U-Net steps
    stack/                    the finished stack, with its model card (README.md)
    train_summary.json        config, wall_s (all phases) and phase_wall_s

A checkpoint is written atomically every `checkpoint_every` steps of a phase; resuming
continues bit for bit (same weights as the uninterrupted run).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ...diffusion.guidance import guide, predict
from ...diffusion.schedule import (
    NoiseConfig,
    alphas_at,
    inference_scheduler,
    predicted_clean_latents,
    prediction_target,
    sample_timesteps,
    target_for_clean,
    training_scheduler,
)
from ...engine.checkpoint import capture_rng, load_checkpoint, read_meta, restore_rng, save_checkpoint
from ...engine.config import MAY_CHANGE, RUN_CONFIG_NAME, config_from_dict, config_to_dict, start_run
from ...engine.loop import Loop, RunLog, read_rows
from ...engine.schedules import warmup_cooldown
from ...evaluate.metrics import psnr_from_mse
from ...io import atomic_path, write_json
from ..data import DataConfig, render_world_set
from .card import model_card, write_model_card
from .ip_adapter import IMAGE_ENCODER_SUBFOLDER, IP_ADAPTER_WEIGHT_NAME, clip_pixel_values, install_ip_adapter, read_ip_adapter_file
from .load import check_stack_folder, resolve_model
from .stack import IP_ADAPTER_SUBFOLDER, Stack, StackConfig, build_stack, read_stack_config, save_stack
from .tokenizer import build_tokenizer

CHECKPOINT = "checkpoint"
SUMMARY_NAME = "train_summary.json"
PHASES = ("vae", "decoder", "unet")
# what may change when a run is resumed: how long the U-Net trains and how its decay ends
# (train checks that a new cool-down starts at or after the step the run resumes from), and
# how often it saves and samples
MAY_CHANGE_HERE = MAY_CHANGE + ("unet_steps", "cooldown_steps", "sample_every")


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
    # the VAE phases end with a linear decay of the learning rate to zero over this fraction of
    # their steps
    vae_cooldown_fraction: float = 0.3
    # with init_from: train the stack's VAE decoder (encoder frozen, so the latents and the
    # U-Net's work on them are unchanged) for this many steps before the U-Net phase
    decoder_steps: int = 0
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
    # a stack to start from ('embedded' or a folder trained here): its sizes, VAE, tokenizer
    # and (unless stack.noise asks for another) prediction target; no VAE phase
    init_from: str | None = None
    # a stack whose trained VAE a fresh run takes instead of training one (no VAE phase);
    # everything else is built fresh at this config's sizes, e.g. a wider U-Net
    vae_from: str | None = None
    # this fraction of each batch draws its timestep from [high_noise_start, 1000) instead of
    # [0, 1000): the noisiest steps, where only the prompts can say where things are, get more of
    # the training (docs/results/2026-11-stack-experiments.md)
    high_noise_fraction: float = 0.0
    high_noise_start: int = 700
    # this fraction of each batch (drawn from the batch's end) is trained at timesteps in
    # [self_input_start, self_input_end) on the input the sampler gives there: self_input_jumps
    # DDIM steps from pure noise, each from the U-Net's own clean estimate, with the true image as
    # the target. Otherwise the later steps only ever see the true layout in their input and
    # learn to take it from there rather than from the prompts (docs/results/2026-12-stack-experiments.md)
    self_input_fraction: float = 0.0
    self_input_start: int = 200
    self_input_end: int = 800
    self_input_jumps: int = 1
    # never drop the image prompt of a self-input sample (see prompt_dropout)
    self_input_keep_image: bool = False
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
        return config_to_dict(self)

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
        if self.decoder_steps < 0 or (self.decoder_steps and self.init_from is None):
            raise ValueError("TrainConfig: decoder_steps fine-tunes the VAE of the stack given by init_from (a fresh run trains the whole VAE: vae_steps); it needs init_from and must be >= 0")
        if self.vae_from is not None and self.init_from is not None:
            raise ValueError("TrainConfig: vae_from and init_from exclude each other (init_from brings its own VAE)")
        if not 0.0 <= self.vae_cooldown_fraction <= 1.0 or self.vae_l1_weight < 0.0:
            raise ValueError("TrainConfig: vae_cooldown_fraction must be in [0, 1] and vae_l1_weight >= 0")
        if self.unet_steps < 0 or self.vae_steps < 0 or self.cooldown_steps < 0:
            raise ValueError("TrainConfig: unet_steps, vae_steps and cooldown_steps must be >= 0")
        self.data.world()  # checks data.n_objects

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        """From a (nested) dict, every key and value type checked (engine.config.config_from_dict)."""
        return config_from_dict(cls, d, where)


# ----------------------------------------------------------------------------------------- data


def load_or_render(run: Path, cfg: TrainConfig) -> dict:
    path = run / "data.npz"
    if path.exists():
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        if len(data["seeds"]) != cfg.data.n_scenes or data["images"].shape[1] != cfg.stack.resolution:
            raise ValueError(f"{path}: cached renders do not match the config (delete it to re-render)")
        return data
    data = render_world_set(cfg.data, cfg.stack.resolution, cfg.seed, mode="images")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)
    return data


# ---------------------------------------------------------------------------------- checkpoints


def write_checkpoint(run: Path, phase: str, step: int, stack: Stack, optimizer, phase_wall_s: dict, np_rng=None, generators=None) -> None:
    """run/checkpoint/ (engine.checkpoint.save_checkpoint): the stack in its shipped layout, the
    optimizer, the RNG states (the global ones, the phase's numpy generator `np_rng` and torch
    `generators`), the phase, its step and every phase's wall time. Atomic: a crash mid-write
    leaves the previous checkpoint intact."""
    save_checkpoint(
        run / CHECKPOINT,
        step=step,
        wall_s=sum(phase_wall_s.values()),
        optimizer=optimizer.state_dict(),
        rng=capture_rng(generators),
        extra={"phase": phase, "phase_wall_s": dict(phase_wall_s), "np_rng": None if np_rng is None else json.dumps(np_rng.bit_generator.state)},
        meta={"phase": phase},
        write=lambda tmp: save_stack(stack, tmp / "stack"),
    )


def read_checkpoint_phase(run) -> tuple[str, int]:
    """(phase, step within it) of the run's last checkpoint."""
    meta = read_meta(Path(run) / CHECKPOINT)
    return meta["phase"], int(meta["step"])


def _restore_np_rng(rng: np.random.Generator, state: str | None) -> None:
    if state is not None:
        rng.bit_generator.state = json.loads(state)


def load_stack_for_training(folder: Path, cfg: StackConfig) -> Stack:
    """A Stack (trainable modules) from a saved folder, with its IP-Adapter installed."""
    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    state = read_ip_adapter_file(folder / IP_ADAPTER_SUBFOLDER / IP_ADAPTER_WEIGHT_NAME)
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


def _init_stack_config(folder: Path, requested: StackConfig) -> StackConfig:
    """The sizes of the stack in `folder` (what its weights fit). Its prediction target and
    schedule ending too, unless `requested` asks for something other than the default (SD 1.x's
    epsilon): fine-tuning a v stack without saying so keeps it v."""
    check_stack_folder(folder)  # a clear error for anything that is not a stack folder
    if not (folder / "fourdistill_stack.json").is_file():
        raise FileNotFoundError(f"{folder / 'fourdistill_stack.json'}: init_from needs a stack trained by this command (its sizes are read from that file)")
    found = read_stack_config(folder)
    noise = found.noise if requested.noise == NoiseConfig() else requested.noise
    return dataclasses.replace(found, noise=noise)


def _local_stack_folder(model: str, field_name: str) -> str:
    """'embedded' or a local stack folder, as a path string; a hub id is refused (training needs files)."""
    where, local = resolve_model(model)  # "embedded" -> the shipped folder
    if not local:
        raise ValueError(f"{field_name} {model!r}: pass 'embedded' or a local stack folder")
    return str(where)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with init_from / vae_from as local folders and the stack sizes they fix: an
    init_from stack's sizes (and target, unless cfg asks for one), a vae_from stack's VAE and
    resolution. What a run records in its config.json; resolving twice changes nothing."""
    cfg = dataclasses.replace(cfg)
    if cfg.init_from is not None:
        cfg.init_from = _local_stack_folder(cfg.init_from, "init_from")
        cfg.stack = _init_stack_config(Path(cfg.init_from), cfg.stack)
    if cfg.vae_from is not None:
        cfg.vae_from = _local_stack_folder(cfg.vae_from, "vae_from")
        given = read_stack_config(Path(cfg.vae_from))
        cfg.stack = dataclasses.replace(cfg.stack, vae=given.vae, resolution=given.resolution)
    return cfg


def unet_parameters(stack: Stack) -> list:
    """What the U-Net phase trains, in a fixed order (the optimizer state depends on it): the
    U-Net (with the Resampler, encoder_hid_proj), the IP-Adapter's key/value projections, the
    text encoder and the image encoder."""
    params = list(stack.unet.parameters())  # includes the Resampler (encoder_hid_proj)
    params += [p for proc in stack.ip_attn_processors().values() for p in proc.parameters() if not any(p is q for q in params)]
    params += list(stack.text_encoder.parameters()) + list(stack.image_encoder.parameters())
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


# -------------------------------------------------------------------------------------- trainer


def train(
    run,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    sample_grid=None,
    command: str | None = None,
    stop_at: int | None = None,
) -> Path | None:
    """Train (or resume) a stack into `run`; the finished stack is `run/stack`. Returns it.

    The engine's --resume rule (engine.config.start_run): a fresh run refuses a `run` holding
    one; a resumed run continues from run/checkpoint and refuses any setting that differs from
    the run's config.json, naming it, but for MAY_CHANGE_HERE: `unet_steps` may grow (the
    learning rate is constant after warmup, so a run extends cleanly) and `cooldown_steps` may
    be set, if the decay starts at or after the U-Net step the run resumes from. cfg None with
    `resume`: the run's own config.

    sample_grid(stack, path, seed=, world=): writes a PNG of samples every `sample_every` U-Net
    steps and at the end, as run/samples/step_NNNNNN.png (None: no samples). The command passes
    fourdistill.evaluate.stack.write_sample_grid; sampling on held-out scenes is evaluation,
    which this package does not import.

    command: the command line, for config.json and the model card. stop_at: checkpoint and
    return None after this many U-Net steps, as an interruption would (resume to finish)."""
    run = Path(run)
    saved = _saved_config(run) if resume else None
    if cfg is None:
        if saved is None:
            raise FileNotFoundError(f"{run / RUN_CONFIG_NAME}: nothing to resume (no training config in {run})")
        cfg = TrainConfig.from_dict(saved, str(run / RUN_CONFIG_NAME))
    cfg = resolve_config(cfg)
    has_ckpt = resume and (run / CHECKPOINT / "checkpoint.json").is_file()
    ckpt = load_checkpoint(run / CHECKPOINT, model=False) if has_ckpt else None
    if saved is not None:
        _check_extension(run, TrainConfig.from_dict(saved, str(run / RUN_CONFIG_NAME)), cfg, ckpt)
    start_run(run, cfg, resume, may_change=MAY_CHANGE_HERE, command=command)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    data = load_or_render(run, cfg)
    if ckpt is not None:
        stack = load_stack_for_training(run / CHECKPOINT / "stack", cfg.stack)
        _match_memory_of_start(stack, cfg)
        restore_rng({k: v for k, v in ckpt.rng.items() if k != "generators"})
        phase, phase_wall = ckpt.extra["phase"], dict(ckpt.extra["phase_wall_s"])
        log(f"resuming phase {phase} at step {ckpt.step}")
    elif cfg.init_from is not None:
        stack = load_stack_for_training(cfg.init_from, cfg.stack)
        phase, phase_wall = ("decoder" if cfg.decoder_steps else "unet"), {}
        log(f"starting from the stack in {cfg.init_from}")
    else:
        tokenizer = build_tokenizer(run / "tokenizer")
        stack = build_stack(cfg.stack, tokenizer, seed=cfg.seed)
        phase, phase_wall = "vae", {}
        if cfg.vae_from is not None:
            stack.vae = AutoencoderKL.from_pretrained(Path(cfg.vae_from) / "vae")
            phase = "unet"
            log(f"the VAE comes from {cfg.vae_from}: no VAE phase")

    run_log = RunLog(run, main="log")
    if phase in ("vae", "decoder"):
        _train_vae(run, cfg, stack, data, ckpt, progress, log, phase_wall, run_log, decoder_only=phase == "decoder")
        ckpt = None
        write_checkpoint(run, "unet", 0, stack, _fresh_unet_optimizer(stack, cfg), phase_wall)
    done = _train_unet(run, cfg, stack, data, ckpt, progress, log, phase_wall, run_log, sample_grid, stop_at)
    run_log.close()
    if not done:
        return None
    save_stack(stack, run / "stack")
    summary = {"config": cfg.to_dict(), "wall_s": sum(phase_wall.values()), "phase_wall_s": phase_wall}
    write_json(run / SUMMARY_NAME, summary)
    write_model_card(run / "stack", training_card(cfg, summary, command))
    times = ", ".join(f"{name} {phase_wall[name] / 60:.1f} min" for name in PHASES if name in phase_wall)
    log(f"done: {run / 'stack'} ({times or 'nothing left to train'})")
    return run / "stack"


def training_card(cfg: TrainConfig, summary: dict, command: str | None = None) -> str:
    """The model card the trainer writes into a finished stack: parts and training, without the
    held-out quality numbers (fourdistill teachers sample --evaluate measures those)."""
    phase_wall = summary["phase_wall_s"]
    decoder = None
    if cfg.decoder_steps:
        decoder = {"steps": cfg.decoder_steps, "batch": cfg.vae_batch, "lr": cfg.vae_lr, "l1_weight": cfg.vae_l1_weight, "wall_s": phase_wall.get("decoder", 0.0)}
    source = cfg.init_from or cfg.vae_from
    vae_source = None if source is None else f"the VAE of the stack given by {'init_from' if cfg.init_from else 'vae_from'} (the run's config.json)"
    steps = {"vae": 0 if source else cfg.vae_steps, "unet": cfg.unet_steps}
    return model_card(summary, None, command or "fourdistill teachers train (library call)", steps, "cpu", decoder=decoder, vae_source=vae_source)


def _match_memory_of_start(stack: Stack, cfg: TrainConfig) -> None:
    """Give the parts of a stack loaded from a checkpoint the memory the run's first invocation
    gave them, so that resuming computes bit for bit what the uninterrupted run computes.

    Weights read from a safetensors file sit at the file's offsets (most not 64-byte aligned),
    and the CPU matmul and convolution kernels round differently on unaligned operands. A part
    the run built fresh had freshly allocated (aligned) memory, so it is copied into fresh
    memory; a part it loaded from a stack (init_from: all of them; vae_from: the VAE) stays as
    loaded, since the checkpoint's files have the same layout, and so the same offsets, as the
    stack it was loaded from."""
    if cfg.init_from is not None:
        return
    parts = [stack.unet, stack.text_encoder, stack.image_encoder]
    if cfg.vae_from is None:
        parts.append(stack.vae)
    with torch.no_grad():
        for module in parts:
            for p in module.parameters():
                p.data = p.data.clone()
            for b in module.buffers():
                b.data = b.data.clone()


def _saved_config(run: Path) -> dict | None:
    path = run / RUN_CONFIG_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())["config"]


def saved_config(run) -> TrainConfig:
    """The settings a run recorded (OUT/config.json); FileNotFoundError when it holds none."""
    run = Path(run)
    saved = _saved_config(run)
    if saved is None:
        raise FileNotFoundError(f"{run / RUN_CONFIG_NAME}: nothing to resume (no training config in {run})")
    return TrainConfig.from_dict(saved, str(run / RUN_CONFIG_NAME))


def _check_extension(run: Path, saved: TrainConfig, cfg: TrainConfig, ckpt) -> None:
    """A resumed run may grow unet_steps and set a cool-down that starts at or after the U-Net
    step it resumes from; ValueError otherwise."""
    if cfg.unet_steps < saved.unet_steps:
        raise ValueError(f"{run}: unet_steps {cfg.unet_steps} is below the run's {saved.unet_steps}; a resumed run can only be extended")
    if (cfg.unet_steps, cfg.cooldown_steps) == (saved.unet_steps, saved.cooldown_steps) or not cfg.cooldown_steps:
        return
    done = ckpt.step if ckpt is not None and ckpt.extra.get("phase") == "unet" else 0  # a VAE-phase checkpoint has no U-Net steps yet
    if cfg.unet_steps - cfg.cooldown_steps < done:
        raise ValueError(
            f"{run}: cooldown_steps {cfg.cooldown_steps}: the decay would start at U-Net step {cfg.unet_steps - cfg.cooldown_steps}, "
            f"before step {done} where the run resumes; extend unet_steps or shorten the cool-down"
        )


def _images_tensor(data: dict, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data["images"][idx]).float().div_(255.0).permute(0, 3, 1, 2).contiguous()


def _truncate_stream(run_log: RunLog, stream: str, step: int) -> None:
    """Drop the rows of one phase's stream past `step` (where a resumed phase continues)."""
    path = run_log.path(stream)
    rows = read_rows(path)
    kept = [r for r in rows if r["step"] <= step]
    if len(kept) != len(rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _train_vae(run: Path, cfg: TrainConfig, stack: Stack, data: dict, ckpt, progress: bool, log, phase_wall: dict, run_log: RunLog,
               decoder_only: bool = False) -> None:
    """Phase "vae" (the whole AutoencoderKL, then its scaling factor) or, with `decoder_only`,
    phase "decoder" (encoder frozen: the latents, and so the scaling factor, do not move).
    Records its time in phase_wall[phase]."""
    phase, steps = ("decoder", cfg.decoder_steps) if decoder_only else ("vae", cfg.vae_steps)
    vae = stack.vae.train()
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    else:
        params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 0xAE if phase == "vae" else 0xDEC, 0])
    start = 0
    if ckpt is not None and ckpt.step > 0:
        opt.load_state_dict(ckpt.optimizer)
        _restore_np_rng(rng, ckpt.extra["np_rng"])
        start = ckpt.step
    factor_at = warmup_cooldown(cfg.warmup_steps, steps, round(cfg.vae_cooldown_fraction * steps))
    _truncate_stream(run_log, phase, start)
    n = len(data["images"])

    def save(done: int) -> None:
        if done < steps:  # after the last step the U-Net phase's first checkpoint follows
            write_checkpoint(run, phase, done, stack, opt, {**phase_wall, phase: loop.wall_s}, np_rng=rng)

    loop = Loop(steps, start_step=start, wall_s=phase_wall.get(phase, 0.0), desc=phase, progress=progress, log=run_log,
                save=save, save_every=cfg.checkpoint_every)
    for step in loop:
        _set_lr(opt, cfg.vae_lr * factor_at(step))
        idx = rng.integers(0, n, cfg.vae_batch)
        x = _images_tensor(data, idx) * 2.0 - 1.0
        with torch.set_grad_enabled(not decoder_only):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        loss = vae_reconstruction_loss(recon, x, cfg.vae_l1_weight)
        kl = None
        if not decoder_only:
            kl = posterior.kl().mean()
            loss = loss + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        psnr = psnr_from_mse(mse.item(), data_range=2.0, min_mse=1e-10)  # images in [-1, 1]: peak-to-peak 2
        scalars = {"mse": mse.item(), "psnr": psnr, **({"kl": kl.item()} if kl is not None else {})}
        shown = {"mse": f"{mse.item():.4f}", "psnr": f"{psnr:.1f}"}
        loop.log(step + 1, stream=phase, postfix=shown, **scalars)
        loop.set_postfix(**shown)
    phase_wall[phase] = loop.wall_s
    vae.eval().requires_grad_(True)
    if decoder_only:
        log(f"decoder done: {steps} steps, the encoder and scaling factor ({vae.config.scaling_factor:.4f}) unchanged")
        return
    factor = set_vae_scaling_factor(stack.vae, data)
    run_log.write(steps, loop.wall_s, phase, scaling_factor=factor)
    log(f"vae done: scaling factor {factor:.4f}")


def vae_reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, l1_weight: float) -> torch.Tensor:
    """MSE + l1_weight * L1 of a reconstruction (both means over every pixel and channel)."""
    err = recon - x
    return err.square().mean() + l1_weight * err.abs().mean()


def set_vae_scaling_factor(vae, data: dict, n: int = 1024, seed: int = 0) -> float:
    """Set the VAE's scaling_factor to 1 / std of latent means over `n` training images, so the
    U-Net sees unit-variance latents (how SD's 0.18215 was chosen). Returns it."""
    idx = np.random.default_rng(seed).choice(len(data["images"]), size=min(n, len(data["images"])), replace=False)
    with torch.no_grad():
        means = torch.cat([vae.encode(_images_tensor(data, idx[i : i + 128]) * 2 - 1).latent_dist.mean for i in range(0, len(idx), 128)])
    factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


def encode_latents(vae, data: dict, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent mean and std (N, 4, h, w) of every training image, unscaled."""
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
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T / temperature
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def training_timesteps(cfg: TrainConfig, n_train: int, gen):
    """cfg.batch training timesteps: diffusion.schedule.sample_timesteps (uniform over
    [0, n_train), the first cfg.high_noise_fraction of them over [cfg.high_noise_start, n_train)),
    then the last self_input_count(cfg) uniform over [cfg.self_input_start, cfg.self_input_end)."""
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
    x = sampler_input(unet, noise_scheduler, noise, timesteps, text_states, image_tokens, jumps)
    return x, target_for_clean(noise_scheduler, x, latents, timesteps)


def text_preservation_batch(frozen, noise_scheduler, ids, noise, timesteps, jumps: int = 1, guidance: float = 0.0, empty_ids=None):
    """Inputs and targets that hold text alone where the `frozen` stack had it: the frozen
    stack's sampler input at `timesteps` from the captions `ids` with the pipeline's empty image
    prompt (empty_image_tokens), and its own output there. With guidance > 0 the sampler is
    guided against the empty caption `empty_ids` (1, L), and the targets are the frozen stack's
    guided and unconditional outputs. Returns (noisy, target), or (noisy, guided, uncond)."""
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
    size = image_encoder.config.image_size
    return image_encoder(torch.zeros(1, 3, size, size), output_hidden_states=True).hidden_states[-2].expand(n, -1, -1)


def preserve_text_count(cfg: TrainConfig) -> int:
    """How many text-alone samples each step adds to hold text alone in place (text_preservation_batch)."""
    return int(round(cfg.preserve_text_fraction * cfg.batch))


def _fresh_unet_optimizer(stack: Stack, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(unet_parameters(stack), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _train_unet(run: Path, cfg: TrainConfig, stack: Stack, data: dict, ckpt, progress: bool, log, phase_wall: dict, run_log: RunLog,
                sample_grid=None, stop_at: int | None = None) -> bool:
    """Phase "unet". Records its time in phase_wall["unet"]; False when stop_at ended it early."""
    if cfg.unet_steps == 0:  # e.g. a decoder fine-tune alone; resuming with more unet_steps adds U-Net steps later
        return True
    stack.vae.eval().requires_grad_(False)
    lat_mean, lat_std = encode_latents(stack.vae, data)
    scale = stack.vae.config.scaling_factor
    tok = stack.tokenizer
    max_len = stack.text_encoder.config.max_position_embeddings
    caption_ids = tok(list(data["captions"]), padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    empty_ids = tok([""], padding="max_length", max_length=max_len, return_tensors="pt").input_ids
    scene_of = torch.from_numpy(data["scene"])

    params = unet_parameters(stack)
    opt = _fresh_unet_optimizer(stack, cfg)
    rng = np.random.default_rng([cfg.seed, 0x0E7, 0])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    start = 0
    if ckpt is not None and ckpt.step > 0:
        opt.load_state_dict(ckpt.optimizer)
        _restore_np_rng(rng, ckpt.extra["np_rng"])
        restore_rng({"generators": ckpt.rng["generators"]}, {"unet": gen})
        start = ckpt.step
    factor_at = warmup_cooldown(cfg.warmup_steps, cfg.unet_steps, cfg.cooldown_steps)
    noise_scheduler = training_scheduler(cfg.stack.noise)
    for m in (stack.unet, stack.text_encoder, stack.image_encoder):
        m.train()
    n = len(data["images"])
    k_self = self_input_count(cfg)
    k_keep = preserve_text_count(cfg)
    g_keep = cfg.preserve_text_guidance
    n_held = k_keep * (2 if g_keep > 0 else 1)  # a guided hold runs each sample on its caption and on the empty one
    if k_keep:  # text alone is held to the stack the run started from
        frozen = load_stack_for_training(cfg.init_from, cfg.stack)
        for m in (frozen.unet, frozen.text_encoder, frozen.image_encoder):
            m.eval().requires_grad_(False)
    _truncate_stream(run_log, "unet", start)

    def save(done: int) -> None:
        write_checkpoint(run, "unet", done, stack, opt, {**phase_wall, "unet": loop.wall_s}, np_rng=rng, generators={"unet": gen})

    loop = Loop(cfg.unet_steps, start_step=start, wall_s=phase_wall.get("unet", 0.0), desc="unet", progress=progress, log=run_log,
                save=save, save_every=cfg.checkpoint_every, stop_at=stop_at)
    t_last = loop.wall_s
    for step in loop:
        _set_lr(opt, cfg.lr * factor_at(step))
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
        diffusion = F.mse_loss(pred, target)
        keep = ~(drop_text | drop_image)
        clip = contrastive_loss(vision.image_embeds[keep], text_out.pooler_output[keep], scene_of[idx_t][keep]) if keep.sum() > 1 else diffusion * 0
        loss = diffusion + cfg.contrastive_weight * clip
        if preserve is not None:
            loss = loss + cfg.preserve_text_weight * preserve
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        now = loop.wall_s
        shown = {"loss": f"{diffusion.item():.4f}", "clip": f"{clip.item():.3f}"}
        scalars = {"loss": diffusion.item(), "contrastive": clip.item(), "lr": opt.param_groups[0]["lr"]}
        if preserve is not None:
            shown["keep"] = f"{preserve.item():.4f}"
            scalars["preserve_text"] = preserve.item()
        shown["samples_s"] = f"{(cfg.batch + n_held) / max(now - t_last, 1e-9):.1f}"
        t_last = now
        loop.log(done, stream="unet", postfix=shown, **scalars)
        loop.set_postfix(**shown)
        if sample_grid is not None and (done % cfg.sample_every == 0 or done == cfg.unet_steps):
            with loop.paused():
                sample_grid(stack, run / "samples" / f"step_{done:06d}.png", seed=cfg.seed, world=cfg.data.world())
                for m in (stack.unet, stack.text_encoder, stack.image_encoder):
                    m.train()
    phase_wall["unet"] = loop.wall_s
    for m in (stack.unet, stack.text_encoder, stack.image_encoder):
        m.eval()
    return not loop.stopped


def stack_pipeline(stack: Stack) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline over the in-memory stack (IP-Adapter installed), for sampling."""
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
