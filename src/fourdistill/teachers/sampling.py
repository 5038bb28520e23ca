"""Sampling sets of images jointly: V views of one scene, or T frames of one clip.

A multi-view or video teacher denoises a set of S latents (B, S, C, h, w) at one timestep per
set. `sample_sets` runs the base stack's sampler (DPM-Solver multistep, Lu et al. 2022) with
classifier-free guidance (Ho & Salimans 2022) and its rescale (Lin et al. 2024) over the whole
set, so the rescale keeps the set's joint spread, and decodes every member through the VAE.
"""

from __future__ import annotations

import copy

import torch

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..diffusion.guidance import guide, rescale_guidance, resolve_guidance_rescale


@torch.no_grad()
def sample_sets(
    parts,
    predict,
    captions: list[str],
    set_size: int,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    guidance_rescale: float | None = None,
    seed: int = 0,
    negative: str = "",
) -> torch.Tensor:
    """Images (B, S, H, W, 3) in [0, 1] for B captions, S members each.

    predict(latents (N, S, C, h, w), timesteps (N,), text_states (N, L, D), rows (N,)) -> the
    teacher's output of the same shape; `rows` index the caption of each of the N sets (the
    unconditional half of a guided batch repeats them), so a predict that needs per-set
    inputs (cameras) can take them. guidance_rescale None: the stack's default (0.7 for a
    zero-terminal-SNR stack)."""
    if not captions:
        raise ValueError("captions: at least one caption is needed")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler = copy.deepcopy(parts.scheduler)
    rescale = resolve_guidance_rescale(scheduler, guidance_rescale)
    b = len(captions)
    text = parts.encode_text(list(captions))
    uncond = parts.encode_text([negative] * b)
    channels = parts.unet.config.in_channels
    size = parts.unet.config.sample_size
    gen = torch.Generator().manual_seed(int(seed))
    device, dtype = parts.device, parts.unet.dtype
    latents = torch.randn((b, set_size, channels, size, size), generator=gen).to(device, dtype)
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    rows = torch.arange(b, device=device)
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        tt = torch.full((b,), int(t), device=device)
        if guidance > 0:
            both = predict(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([text, uncond]), torch.cat([rows, rows]))
            cond, un = both.chunk(2)
            pred = rescale_guidance(guide(cond, un, guidance), cond, rescale)
        else:
            pred = predict(x, tt, text, rows)
        latents = scheduler.step(pred, t, latents).prev_sample
    flat = latents.flatten(0, 1)
    images = torch.cat([parts.decode_latents(flat[i : i + 64]) for i in range(0, len(flat), 64)])
    return images.reshape(b, set_size, *images.shape[1:]).float().cpu()
