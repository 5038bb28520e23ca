"""Clips from captions with a video teacher, and their videos.

The sampler is the image stack's: DPM-Solver multistep (Lu et al. 2022) for DEFAULT_STEPS steps,
classifier-free guidance (Ho & Salimans 2022) at DEFAULT_GUIDANCE, rescaled towards the
conditional prediction's spread for a zero-terminal-SNR schedule (Lin et al. 2024, 0.7; 0 for
SD 1.x's). The rescale is taken over the whole clip (C, F, H, W), so it keeps the clip's joint
spread, as AnimateDiffPipeline's guidance sees one clip as one sample.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ...diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ...diffusion.guidance import guide, rescale_guidance, resolve_guidance_rescale
from ...io import image_grid, write_video
from .load import VideoTeacher, check_num_frames, predict

DEFAULT_FPS = 8


@torch.no_grad()
def sample_clips(
    teacher: VideoTeacher,
    captions: list[str],
    num_frames: int | None = None,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    guidance_rescale: float | None = None,
    seed: int = 0,
    negative: str = "",
) -> torch.Tensor:
    """Clips (B, F, H, W, 3) float in [0, 1] for B captions; F = num_frames (default: the
    length the teacher was trained on). The initial noise is drawn (B, F, C, h, w) from a
    torch.Generator seeded with `seed`. guidance_rescale None: the teacher's default (0.7 on a
    zero-terminal-SNR schedule, else 0)."""
    if not captions:
        raise ValueError("captions: at least one caption is needed")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    frames = int(teacher.num_frames if num_frames is None else num_frames)
    check_num_frames(teacher, frames, "num_frames")
    scheduler = copy.deepcopy(teacher.scheduler)
    rescale = resolve_guidance_rescale(scheduler, guidance_rescale)
    b = len(captions)
    text = teacher.encode_text(list(captions))
    uncond = teacher.encode_text([negative] * b)
    unet = teacher.unet
    device, dtype = teacher.device, unet.dtype
    gen = torch.Generator().manual_seed(int(seed))
    shape = (b, frames, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    latents = torch.randn(shape, generator=gen).permute(0, 2, 1, 3, 4).to(device, dtype)  # (B, C, F, h, w)
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        tt = torch.full((b,), int(t), device=device)
        if guidance > 0:
            both = predict(teacher, torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([text, uncond]))
            cond, un = both.chunk(2)
            pred = rescale_guidance(guide(cond, un, guidance), cond, rescale)
        else:
            pred = predict(teacher, x, tt, text)
        latents = scheduler.step(pred, t, latents).prev_sample
    flat = latents.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B F, C, h, w)
    images = torch.cat([teacher.decode_latents(flat[i : i + 64]) for i in range(0, len(flat), 64)])
    return images.reshape(b, frames, *images.shape[1:]).float().cpu()


def clip_frames(clips) -> np.ndarray:
    """Clips (B, F, H, W, 3) in [0, 1] -> video frames (F, H', W', 3): frame k shows the B clips'
    k-th frames side by side."""
    clips = np.asarray(clips.numpy() if torch.is_tensor(clips) else clips, dtype=np.float32)
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips: expected (B, F, H, W, 3), got shape {clips.shape}")
    return np.stack([image_grid(clips[:, k], rows=1) for k in range(clips.shape[1])])


def write_clips(path, clips, fps: int = DEFAULT_FPS) -> Path:
    """Write clips (B, F, H, W, 3) as one video (mp4, webm, gif, avi: io.write_video, atomic),
    the B clips side by side."""
    return write_video(path, clip_frames(clips), fps=fps)
