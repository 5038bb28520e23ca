"""What every score-distillation guidance shares: the loss form, the weight, the timesteps, the
text states and the inputs' checks.

Score distillation (DreamFusion, Poole et al. 2023, "DreamFusion: Text-to-3D using 2D
Diffusion") pushes rendered latents z along a gradient the frozen teacher gives, without
back-propagating through the teacher. The gradient is written into an ordinary loss:

    target = sg(z - grad)        loss = 0.5 * ||z - target||^2 / N      dloss/dz = grad / N

`normalisation` chooses N (`sds_loss`):

- "mean" (ours, the default): N = the number of latent elements, so a clip of more frames or a
  larger latent does not silently change the size of the step a parameter shared by all of them
  receives, and the teachers' losses are comparable;
- "sum": N = the batch (`batch`, the leading dimension the reference divides by), 4D-fy's (Bahmani
  et al. 2024, "4D-fy: Text-to-4D Generation Using Hybrid Score Distillation Sampling") and
  threestudio's `0.5 * sum (z - target)^2 / B`, to reproduce them.

Before the loss the gradient goes through `nan_to_num` and, when `grad_clip` is set, an
element-wise clamp to [-grad_clip, grad_clip] (threestudio's, after Hong et al. 2023,
"Debiasing Scores and Prompts of 2D Diffusion for View-consistent Text-to-3D Generation").
The weight is DreamFusion's w(t) = 1 - abar_t. Timesteps come from a TimestepAnnealing
(fourdistill.diffusion.schedule: the [t_min, t_max] range per step, linear annealing, DreamTime's
decreasing t), which is data in each guidance's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..diffusion.schedule import alphas_at, annealed_timesteps

NORMALISATIONS = ("mean", "sum")
Normalisation = Literal["mean", "sum"]
LOSS_SPACES = ("latent", "image")
LossSpace = Literal["latent", "image"]


class GuidanceInputError(ValueError):
    """An input a guidance cannot take; the message names the argument."""


@dataclass
class PromptStates:
    """Cached text states of a batch's captions: `cond` (N, L, D) and the unconditional side
    `uncond` (N, L, D) (the empty caption, or a negative prompt). N is 1 (shared by a batch) or
    the batch; `expand` fits them to a batch."""

    cond: torch.Tensor
    uncond: torch.Tensor

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.cond.shape[0]
        if self.cond.ndim != 3 or self.uncond.shape != self.cond.shape:
            raise GuidanceInputError(f"prompts: expected cond and uncond text states of one shape (N, L, D), "
                                     f"got {tuple(self.cond.shape)} and {tuple(self.uncond.shape)}")
        if n == batch:
            return self.cond, self.uncond
        if n == 1:
            return self.cond.expand(batch, -1, -1), self.uncond.expand(batch, -1, -1)
        raise GuidanceInputError(f"prompts: {n} captions for a batch of {batch} (give 1 or {batch})")


def prompt_states(encode_text, captions, negative: str = "") -> PromptStates:
    """PromptStates for `captions` (a list of non-empty strings), the unconditional side the
    text states of `negative` ("" : the empty caption, as classifier-free guidance is trained
    with). `encode_text`: captions -> (N, L, D), as TeacherParts.encode_text."""
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    if not captions:
        raise GuidanceInputError("captions: the list is empty (give at least one caption)")
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise GuidanceInputError(f"captions[{i}]: expected a non-empty caption, got {c!r}")
    cond = encode_text(captions)
    uncond = encode_text([negative] * len(captions))
    return PromptStates(cond.detach(), uncond.detach())


def training_schedule(scheduler):
    """A DDPM scheduler over `scheduler`'s noise schedule and prediction type (any diffusers
    scheduler; a sampler such as DPM-Solver lacks get_velocity, which training targets need)."""
    return scheduler if isinstance(scheduler, DDPMScheduler) else DDPMScheduler.from_config(scheduler.config)


def sds_weight(scheduler, timesteps, like) -> torch.Tensor:
    """DreamFusion's w(t) = 1 - abar_t at `timesteps` (N,), shaped (N, 1, ..., 1) like `like`."""
    return 1 - alphas_at(scheduler, timesteps.to(like.device), like)


def add_noise(scheduler, latents, noise, timesteps) -> torch.Tensor:
    """x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps for latents (N, ...) at timesteps (N,)
    (the forward process, for any scheduler that carries alphas_cumprod)."""
    a = alphas_at(scheduler, timesteps.to(latents.device), latents)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def draw_timesteps(annealing, step: int, n: int, scheduler, generator=None, device=None) -> torch.Tensor:
    """n timesteps (N,) int64 at optimisation `step` from the annealed range (annealed_timesteps),
    over the scheduler's training schedule. `generator`: a CPU torch.Generator."""
    t = annealed_timesteps(annealing, step, n, int(scheduler.config.num_train_timesteps), generator)
    return t.to(device) if device is not None else t


def clean_gradient(grad: torch.Tensor, grad_clip: float | None = None) -> torch.Tensor:
    """nan_to_num of a score-distillation gradient, clamped element-wise to +-grad_clip if set."""
    grad = torch.nan_to_num(grad)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    return grad


def distillation_loss(latents: torch.Tensor, target: torch.Tensor, normalisation: Normalisation = "mean",
                      batch: int | None = None) -> torch.Tensor:
    """0.5 * ||z - sg(target)||^2 / N: N = latents.numel() ("mean") or `batch` ("sum"; default
    latents.shape[0]). Computed in float32."""
    if normalisation not in NORMALISATIONS:
        raise GuidanceInputError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    total = 0.5 * F.mse_loss(latents.float(), target.detach().float(), reduction="sum")
    n = latents.numel() if normalisation == "mean" else (latents.shape[0] if batch is None else batch)
    return total / n


def sds_loss(latents: torch.Tensor, grad: torch.Tensor, normalisation: Normalisation = "mean",
             batch: int | None = None) -> torch.Tensor:
    """The score-distillation loss of `grad` (shaped like latents): target = sg(z - grad),
    0.5 * ||z - target||^2 / N (distillation_loss), so dloss/dz = grad / N."""
    return distillation_loss(latents, (latents - grad).detach(), normalisation, batch)


def check_images(images, dims: int, what: str, layout: str) -> torch.Tensor:
    """`images` as a float tensor of `dims` dimensions ending in 3 channels, else a
    GuidanceInputError naming `what` and the expected `layout`."""
    if not torch.is_tensor(images):
        raise GuidanceInputError(f"{what}: expected a torch tensor {layout} in [0, 1], got {type(images).__name__}")
    if images.ndim != dims or images.shape[-1] != 3:
        raise GuidanceInputError(f"{what}: expected shape {layout} in [0, 1], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise GuidanceInputError(f"{what}: expected float values in [0, 1], got dtype {images.dtype}")
    return images


def check_latents(latents, dims: int, channels: int, what: str, layout: str) -> None:
    if not torch.is_tensor(latents) or latents.ndim != dims:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise GuidanceInputError(f"{what}: expected latents {layout}, got {shape}")
    c_axis = 1 if layout.startswith("(B, C") else 2
    if latents.shape[c_axis] != channels:
        raise GuidanceInputError(f"{what}: expected {channels} latent channels {layout}, got shape {tuple(latents.shape)}")


def teacher_pixels(vae, images: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """Images (N, H, W, 3) in [0, 1] -> (N, 3, r, r) in [0, 1] on the VAE's device and dtype,
    bilinearly resized to `resolution` pixels when given (4D-fy renders smaller than the teacher
    and upsamples). Differentiable."""
    x = images.permute(0, 3, 1, 2).to(vae.device, vae.dtype)
    if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(x, (resolution, resolution), mode="bilinear", align_corners=False)
    return x


def vae_encode(vae, images: torch.Tensor, resolution: int | None = None, generator=None) -> torch.Tensor:
    """Images (N, H, W, 3) in [0, 1] -> scaled latents (N, C, h, w), a sample of the VAE posterior
    (differentiable), resized to `resolution` pixels first when given (teacher_pixels)."""
    posterior = vae.encode(teacher_pixels(vae, images, resolution) * 2 - 1).latent_dist
    return posterior.sample(generator) * vae.config.scaling_factor


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> images (N, 3, H, W) in [0, 1], float32, without autograd."""
    x = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


def image_space_loss(vae, images: torch.Tensor, target_latents: torch.Tensor, resolution: int | None = None,
                     normalisation: Normalisation = "mean", batch: int | None = None) -> torch.Tensor:
    """A score-distillation loss in pixels: 0.5 * ||x - sg(D(target))||^2 / N, x the renders
    (N, H, W, 3) in [0, 1] at the teacher's `resolution` (teacher_pixels), D the VAE decoder, and
    `target_latents` (N, C, h, w) the guidance's target z - grad (SDS) or x0 (MVDream). N: the
    pixel elements ("mean") or `batch` ("sum"; default N images). HiFA (Zhu et al. 2023, "HiFA:
    High-fidelity Text-to-3D Generation with Advanced Diffusion Guidance") adds this image-space
    term to the latent one.

    Why here: the gradient of the latent loss reaches the renders through the encoder's Jacobian,
    which only follows the teacher where the encoder inverts the decoder. A latent channel the
    decoder ignores (a VAE trained with little KL lets channels collapse to the prior) still
    depends on the colours in the encoder, so its share of the gradient, as large as any other's,
    moves colours the decoder never shows: docs/results/2026-12-03-colour-cast.md. Decoding the
    target first takes only what the decoder reads."""
    x = teacher_pixels(vae, images, resolution).float()
    target = vae_decode(vae, target_latents).to(x.device)
    if target.shape != x.shape:
        raise GuidanceInputError(f"target_latents decode to {tuple(target.shape)}, the renders are {tuple(x.shape)}")
    return distillation_loss(x, target, normalisation, batch)


def check_loss_space(space: str) -> None:
    if space not in LOSS_SPACES:
        raise GuidanceInputError(f"loss_space must be one of {LOSS_SPACES}, got {space!r}")


def teacher_resolution(vae, unet) -> int:
    """Image size in pixels a denoiser was built for (latent sample size x the VAE's factor)."""
    sample = unet.config.sample_size
    sample = sample[0] if isinstance(sample, (tuple, list)) else sample
    return int(sample) * 2 ** (len(vae.config.block_out_channels) - 1)
