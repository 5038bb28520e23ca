"""Score distillation from a video teacher, as 4D-fy does it.

4D-fy (Bahmani et al. 2024, "4D-fy: Text-to-4D Generation Using Hybrid Score Distillation
Sampling") distils a text-to-video model (Zeroscope; VideoCrafter2 as an option) into the
dynamic part of the scene with SDS on a rendered clip of F frames:

    z (B, C, F, h, w)   the frames' latents (the VAE per frame; `vae_grad_frames` of them per clip
                        back-propagated, the rest encoded without gradient: 4D-fy's low_ram_vae)
    eps_cfg = text + s (text - uncond)          4D-fy's form of classifier-free guidance, which is
                                                uncond + (s + 1) (text - uncond) (s: 100)
    score   = eps_cfg - eps                     (one t per clip, shared by its frames)
    score   = mean_F(score) + k (score - mean_F(score))   motion amplification (k = 1: off;
                                                           4D-fy's VideoCrafter2 option)
    grad    = w(t) score,  w = 1 - abar_t;      loss = 0.5 ||z - sg(z - grad)||^2 / N

N: the number of latent elements ("mean", ours: a different frame count or latent size does not
change the step) or the clips B ("sum": 4D-fy's, summed over frames and latent elements). The
unconditional side may be a negative prompt: MOTION_NEGATIVE_PROMPT, 4D-fy's against static
results (`VideoSDSConfig.negative_prompt`, used by `prompts`).

The teacher is anything with `unet`, `vae`, `scheduler` and `encode_text(captions)`
(TeacherParts or a video teacher; the U-Net gives the resolution and dtype) plus `predict(latents (B, C, F, h, w), t (B,), text_states (B, L, D))` -> the
prediction, same shape (any prediction type); None calls `parts.unet` as diffusers'
UNet3DConditionModel (unet(latents, t, encoder_hidden_states=text).sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diffusion.guidance import guide
from ..diffusion.schedule import TimestepAnnealing, predicted_noise
from .core import (GuidanceInputError, LossSpace, Normalisation, PromptStates, add_noise, check_images, check_latents, check_loss_space,
                   clean_gradient, draw_timesteps, image_space_loss, prompt_states, sds_loss, sds_weight, teacher_resolution,
                   training_schedule, vae_encode)

MOTION_NEGATIVE_PROMPT = "low motion, static statue, not moving, no motion"  # 4D-fy (VideoCrafter2 option)


@dataclass
class VideoSDSConfig:
    """guidance_scale: s of `text + s (text - uncond)` (4D-fy's Zeroscope: 100). timesteps: the
    annealed range of t. normalisation: "mean" or "sum" (core). grad_clip: element-wise clamp
    (None: off). motion_amplification: k (1: off; 4D-fy's VideoCrafter2 option uses larger k).
    negative_prompt: the unconditional text ("": none; MOTION_NEGATIVE_PROMPT). vae_grad_frames:
    frames per clip back-propagated through the VAE (None: all). resolution: pixels the frames are
    resized to before the VAE (None: the teacher's; frames are square here). loss_space: "latent"
    (4D-fy) or "image" (the target decoded, the loss on the pixels: core.image_space_loss; every
    frame then carries the gradient and vae_grad_frames does not apply)."""

    guidance_scale: float = 100.0  # 4D-fy, Zeroscope
    timesteps: TimestepAnnealing = field(default_factory=TimestepAnnealing)
    normalisation: Normalisation = "mean"
    grad_clip: float | None = None
    motion_amplification: float = 1.0
    negative_prompt: str = ""
    vae_grad_frames: int | None = None
    resolution: int | None = None
    loss_space: LossSpace = "latent"

    def __post_init__(self):
        check_loss_space(self.loss_space)
        if self.vae_grad_frames is not None and self.vae_grad_frames < 1:
            raise GuidanceInputError(f"vae_grad_frames must be >= 1 or None, got {self.vae_grad_frames}")


class VideoSDS:
    """4D-fy's video SDS over a teacher's `parts` and `predict` (module docstring)."""

    def __init__(self, parts, predict=None, config: VideoSDSConfig | None = None):
        self.parts = parts
        self.predict = predict or (lambda x, t, text: parts.unet(x, t, encoder_hidden_states=text).sample)
        self.config = config or VideoSDSConfig()
        self.scheduler = training_schedule(parts.scheduler)
        self.resolution = self.config.resolution or teacher_resolution(parts.vae, parts.unet)

    def prompts(self, captions) -> PromptStates:
        """Text states of `captions`, the unconditional side the config's negative prompt."""
        return prompt_states(self.parts.encode_text, captions, self.config.negative_prompt)

    def encode(self, frames, generator=None) -> torch.Tensor:
        """Rendered clips (B, F, H, W, 3) in [0, 1] -> latents (B, C, F, h, w); with
        vae_grad_frames k, k random frames per clip (drawn from `generator`) carry the gradient."""
        check_images(frames, 5, "frames", "(B, F, H, W, 3)")
        b, f = frames.shape[:2]
        flat = frames.reshape(b * f, *frames.shape[2:])
        k = self.config.vae_grad_frames
        if k is None or k >= f:
            z = vae_encode(self.parts.vae, flat, self.resolution, generator)
        else:
            grad_mask = (torch.rand(b, f, generator=generator).argsort(dim=1).argsort(dim=1) < k).reshape(-1).to(flat.device)
            with_grad = vae_encode(self.parts.vae, flat[grad_mask], self.resolution, generator)
            with torch.no_grad():
                without = vae_encode(self.parts.vae, flat[~grad_mask], self.resolution, generator)
            z = with_grad.new_zeros((b * f, *with_grad.shape[1:]))
            z[grad_mask], z[~grad_mask] = with_grad, without
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2)

    def __call__(self, frames, prompts: PromptStates, step: int = 0, generator=None, **kw) -> dict:
        if self.config.loss_space != "image":
            return self.latent_loss(self.encode(frames, generator), prompts, step, generator, **kw)
        with torch.no_grad():
            latents = self.encode(frames, generator)
        result = self.latent_loss(latents, prompts, step, generator, **kw)
        b, f = frames.shape[:2]
        target = result["target"].transpose(1, 2).flatten(0, 1)  # (B F, C, h, w)
        loss = image_space_loss(self.parts.vae, frames.reshape(b * f, *frames.shape[2:]), target, self.resolution,
                                self.config.normalisation, batch=b)
        return {**result, "loss": loss}

    def latent_loss(self, latents, prompts: PromptStates, step: int = 0, generator=None, t=None, noise=None) -> dict:
        """The video SDS loss at latents (B, C, F, h, w); `t` (B,) and `noise` (B, C, F, h, w)
        override the draws (timesteps first, then noise)."""
        check_latents(latents, 5, int(self.parts.vae.config.latent_channels), "latents", "(B, C, F, h, w)")
        b = latents.shape[0]
        cond, uncond = prompts.expand(b)
        if t is None:
            t = draw_timesteps(self.config.timesteps, step, b, self.scheduler, generator)
        t = torch.as_tensor(t, dtype=torch.int64).reshape(-1).expand(b).to(latents.device)
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        with torch.no_grad():
            noisy = add_noise(self.scheduler, latents.detach().float(), noise.float(), t)
            x = noisy.to(self.parts.unet.dtype)
            both = self.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]).to(x.dtype))
            text, un = both.float().chunk(2)
            eps_cfg = predicted_noise(self.scheduler, noisy, guide(text, un, self.config.guidance_scale + 1), t)
            score = eps_cfg - noise.float()
            k = self.config.motion_amplification
            if k != 1.0:
                mean = score.mean(dim=2, keepdim=True)
                score = mean + k * (score - mean)
        w = sds_weight(self.scheduler, t, noisy)
        grad = clean_gradient(w * score, self.config.grad_clip)
        return {"loss": sds_loss(latents, grad, self.config.normalisation, batch=b), "t": t, "w": w.reshape(-1),
                "grad_norm": grad.norm().detach(), "target": (latents.detach().float() - grad).detach()}
