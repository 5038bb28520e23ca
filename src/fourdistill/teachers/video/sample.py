"""Clips from captions with a video teacher, and their videos.

The sampler is the image stack's: DPM-Solver multistep (Lu et al. 2022) for DEFAULT_STEPS steps,
classifier-free guidance (Ho & Salimans 2022) at DEFAULT_GUIDANCE, rescaled towards the
conditional prediction's spread for a zero-terminal-SNR schedule (Lin et al. 2024, 0.7; 0 for
SD 1.x's). The rescale is taken over the whole clip (C, F, H, W), so it keeps the clip's joint
spread, as AnimateDiffPipeline's guidance sees one clip as one sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ...io import image_grid, write_video
from ..sampling import sample_sets
from .load import VideoTeacher, check_num_frames, predict

DEFAULT_FPS = 8


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
    length the teacher was trained on). The sampler is teachers.sampling.sample_sets (the
    initial noise (B, F, C, h, w) from a torch.Generator seeded with `seed`) with the teacher's
    prediction on (B, C, F, h, w). guidance_rescale None: the teacher's default (0.7 on a
    zero-terminal-SNR schedule, else 0)."""
    frames = int(teacher.num_frames if num_frames is None else num_frames)
    check_num_frames(teacher, frames, "num_frames")

    def predict_set(x, t, text, rows):  # (N, F, C, h, w) <-> the U-Net's (N, C, F, h, w)
        return predict(teacher, x.transpose(1, 2), t, text).transpose(1, 2)

    return sample_sets(teacher, predict_set, list(captions), frames, steps, guidance, guidance_rescale, seed, negative)


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
