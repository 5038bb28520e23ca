"""The parts every text-conditioned latent-diffusion teacher shares: tokenizer, text encoder, VAE,
scheduler, and a denoiser in the teacher's own layout.

The real families share them the same way: MVDream keeps SD 2.1's VAE and OpenCLIP text
encoder, AnimateDiff keeps the image model it animates, Zeroscope keeps SD's VAE and a CLIP
text encoder. So a multi-view or video teacher here is "a denoiser + the parts of a base
stack" (by default the embedded image stack), and `TeacherParts` holds what the trainers,
samplers and score-distillation guidance need from it:

    parts.encode_text(captions)      -> (N, 77, D) text states (the last hidden state, as SD)
    parts.encode_images(images)      -> (N, 4, h, w) scaled latents
    parts.decode_latents(latents)    -> (N, H, W, 3) float images in [0, 1]
    parts.training_scheduler         DDPM over the same noise schedule (for training losses)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class TeacherParts:
    """A denoiser (`unet`: any diffusers U-Net class) and the base stack's other parts.
    `scheduler` is the sampler (DPM-Solver multistep); `source` names where they came from."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    source: str = ""

    @property
    def training_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler.config)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def resolution(self) -> int:
        """Image size in pixels the denoiser was built for (latent sample size x VAE factor)."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * factor

    def to(self, device=None, dtype=None) -> "TeacherParts":
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "TeacherParts":
        for m in (self.unet, self.vae, self.text_encoder):
            m.eval()
        return self

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, L, D) last hidden states of the text encoder for `captions` (padded to the
        tokenizer's max length, as Stable Diffusion)."""
        ids = self.tokenizer(list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def encode_images(self, images, generator=None) -> torch.Tensor:
        """Images (N, H, W, 3) uint8 or float in [0, 1] (numpy or torch) -> latents (N, 4, h, w),
        sampled from the VAE posterior and multiplied by its scaling factor. Differentiable."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.to(self.vae.device, self.vae.dtype).permute(0, 3, 1, 2) * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        return posterior.sample(generator) * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (N, 4, h, w) -> images (N, H, W, 3) float in [0, 1]. Differentiable."""
        x = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return ((x.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1)


def load_base_parts(base: str | None = None, dtype=None) -> TeacherParts:
    """The tokenizer, text encoder, VAE and scheduler of a Stable-Diffusion-layout stack
    ('embedded' or None: the shipped stack; a local folder; a hub id) with its image U-Net,
    in float32 unless `dtype`. Errors name the folder (teachers.image.load.StackLoadError)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .image.load import StackLoadError, first_line, from_hub, check_stack_folder, resolve_model

    dtype = dtype or torch.float32
    where, local = resolve_model(base)

    def load():
        kw = dict(local_files_only=True) if local else {}
        return TeacherParts(
            unet=UNet2DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=dtype, **kw),
            vae=AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=dtype, **kw),
            text_encoder=CLIPTextModel.from_pretrained(where, subfolder="text_encoder", torch_dtype=dtype, **kw),
            tokenizer=CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **kw),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(where, subfolder="scheduler", **kw),
            source=str(base or "embedded"),
        )

    if not local:
        return from_hub(load, where)
    check_stack_folder(where)
    try:
        return load()
    except (OSError, ValueError, KeyError) as exc:
        raise StackLoadError(Path(where), f"cannot load the stack's parts ({first_line(exc)})") from None
