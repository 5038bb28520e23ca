"""Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance") and its
rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

Predictions are U-Net outputs (N, C, h, w) of any prediction type; guidance combines the
conditional and the unconditional one at the same input and timestep.
"""

from __future__ import annotations

import torch

# Lin et al. (section 3.4): with a zero-terminal-SNR schedule, classifier-free guidance at the usual
# scales over-exposes; rescaling the guided prediction to the conditional one's standard deviation,
# mixed 0.7 : 0.3 with the plain guided one, fixes it. diffusers' pipelines take it as
# `guidance_rescale`.
ZERO_SNR_GUIDANCE_RESCALE = 0.7


def guide(cond, uncond, guidance: float):
    """Classifier-free guidance: uncond + guidance * (cond - uncond)."""
    return uncond + guidance * (cond - uncond)


def rescale_guidance(guided, cond, rescale: float):
    """Lin et al.'s rescale of a guided prediction: x = guided * std(cond) / std(guided), per
    sample (over all but the first dimension, unbiased, as diffusers' rescale_noise_cfg), mixed
    rescale * x + (1 - rescale) * guided. rescale 0 returns `guided` itself."""
    if rescale == 0:
        return guided
    dims = list(range(1, guided.ndim))
    x = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * x + (1 - rescale) * guided


def default_guidance_rescale(scheduler) -> float:
    """The `guidance_rescale` to sample a stack with: ZERO_SNR_GUIDANCE_RESCALE when its scheduler
    (a diffusers scheduler or its config) ends at zero SNR, else 0 (plain guidance, as SD 1.x)."""
    config = getattr(scheduler, "config", scheduler)
    return ZERO_SNR_GUIDANCE_RESCALE if config.get("rescale_betas_zero_snr", False) else 0.0


def resolve_guidance_rescale(scheduler, value: float | None) -> float:
    """`value`, checked to lie in [0, 1]; None: default_guidance_rescale(scheduler)."""
    value = default_guidance_rescale(scheduler) if value is None else float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"guidance_rescale must lie in [0, 1], got {value}")
    return value


def predict(unet, x, timesteps, text_states, image_tokens=None, guidance: float = 0.0, uncond_states=None, guidance_rescale: float = 0.0):
    """`unet`'s prediction at (x (N, C, h, w), timesteps (N,)) on text states (N, 77, D) and,
    for an IP-Adapter U-Net, image tokens (N, T, D') (None: a U-Net without one). With
    guidance > 0 the classifier-free guided one, uncond + guidance * (cond - uncond), the
    unconditional side on `uncond_states` with the same image tokens, both halves in one batched
    call; guidance_rescale > 0 then rescales it (rescale_guidance)."""
    def run(x, t, states, tokens):
        extra = {} if tokens is None else {"added_cond_kwargs": {"image_embeds": [tokens[:, None]]}}
        return unet(x, t, encoder_hidden_states=states, **extra).sample

    if guidance <= 0:
        return run(x, timesteps, text_states, image_tokens)
    if uncond_states is None:
        raise ValueError("predict: guidance needs uncond_states")
    tokens = None if image_tokens is None else torch.cat([image_tokens, image_tokens])
    both = run(torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([text_states, uncond_states]), tokens)
    cond, uncond = both.chunk(2)
    return rescale_guidance(guide(cond, uncond, guidance), cond, guidance_rescale)
