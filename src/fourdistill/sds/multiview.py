"""Score distillation from the multi-view teacher: MVDream's x0-reconstruction loss.

MVDream (Shi et al. 2024, "MVDream: Multi-view Diffusion for 3D Generation") distils its 4-view
model into a 3D (here 4D) representation with one timestep shared by the V views of a sample
and, instead of SDS's noise residual, the distance of the latents to the clean latents the
guided prediction implies:

    x_t   = sqrt(abar_t) z + sqrt(1 - abar_t) eps            (one t per group of V views)
    x0    = x0(guided prediction),  guided = uncond + s (cond - uncond)   (s: MVDream/4D-fy 50)
    x0_r  = x0 * std(x0(cond)) / std(x0)                      (per group of views: Lin et al. 2024's
                                                               rescale, diffusion.guidance.rescale_guidance)
    x0'   = rescale * x0_r + (1 - rescale) * x0               (rescale 0.5, MVDream's)
    loss  = 0.5 * ||z - sg(x0')||^2 / N                       (core.distillation_loss)

N: the number of latent elements ("mean") or of images B V ("sum": 4D-fy and threestudio divide
the sum by the images of the batch). The gradient z - x0' equals, without the rescale,
sqrt((1 - abar) / abar) (eps_cfg - eps): returned as "w", the x0 form's implied weight.

Inputs: renders (B, V, H, W, 3) in [0, 1] or latents (B, V, C, h, w); cameras (B, V, 4, 4)
camera-to-world; the teacher a fourdistill.teachers.multiview.load.MultiViewTeacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diffusion.guidance import guide, rescale_guidance
from ..diffusion.schedule import TimestepAnnealing, alphas_at, predicted_clean_latents
from .core import (GuidanceInputError, LossSpace, Normalisation, PromptStates, add_noise, check_images, check_latents, check_loss_space,
                   distillation_loss, draw_timesteps, image_space_loss, prompt_states, teacher_resolution, training_schedule, vae_encode)


@dataclass
class MultiViewSDSConfig:
    """guidance_scale: classifier-free guidance (MVDream and 4D-fy: 50). rescale: the mix of the
    std-rescaled x0 (MVDream: 0.5; 0: plain x0). timesteps: the annealed range of t (4D-fy anneals
    it per stage). normalisation: "mean" or "sum" (core). resolution: pixels the renders are
    resized to before the VAE (None: the teacher's). loss_space: "latent" (MVDream) or "image" (x0'
    decoded, the loss on the pixels: core.image_space_loss)."""

    guidance_scale: float = 50.0  # MVDream, 4D-fy
    rescale: float = 0.5  # MVDream's x0 std rescale
    timesteps: TimestepAnnealing = field(default_factory=TimestepAnnealing)
    normalisation: Normalisation = "mean"
    resolution: int | None = None
    loss_space: LossSpace = "latent"

    def __post_init__(self):
        check_loss_space(self.loss_space)
        if not 0.0 <= self.rescale <= 1.0:
            raise GuidanceInputError(f"rescale must lie in [0, 1], got {self.rescale}")


class MultiViewSDS:
    """MVDream's x0-reconstruction guidance over a MultiViewTeacher (parts + predict)."""

    def __init__(self, teacher, config: MultiViewSDSConfig | None = None):
        self.teacher = teacher
        self.config = config or MultiViewSDSConfig()
        self.scheduler = training_schedule(teacher.parts.scheduler)
        self.resolution = self.config.resolution or teacher_resolution(teacher.parts.vae, teacher.parts.unet)

    def prompts(self, captions, negative: str = "") -> PromptStates:
        return prompt_states(self.teacher.parts.encode_text, captions, negative)

    def encode(self, images, generator=None) -> torch.Tensor:
        """Renders (B, V, H, W, 3) in [0, 1] -> latents (B, V, 4, h, w), differentiable."""
        check_images(images, 5, "images", "(B, V, H, W, 3)")
        b, v = images.shape[:2]
        z = vae_encode(self.teacher.parts.vae, images.reshape(b * v, *images.shape[2:]), self.resolution, generator)
        return z.reshape(b, v, *z.shape[1:])

    def __call__(self, images, prompts: PromptStates, cameras, step: int = 0, generator=None, **kw) -> dict:
        if self.config.loss_space != "image":
            return self.latent_loss(self.encode(images, generator), prompts, cameras, step, generator, **kw)
        with torch.no_grad():
            latents = self.encode(images, generator)
        result = self.latent_loss(latents, prompts, cameras, step, generator, **kw)
        b, v = images.shape[:2]
        loss = image_space_loss(self.teacher.parts.vae, images.reshape(b * v, *images.shape[2:]), result["target"].flatten(0, 1),
                                self.resolution, self.config.normalisation, batch=b * v)
        return {**result, "loss": loss}

    def latent_loss(self, latents, prompts: PromptStates, cameras, step: int = 0, generator=None, t=None, noise=None) -> dict:
        """The x0 loss at latents (B, V, C, h, w) seen from cameras (B, V, 4, 4); `t` (B,) and
        `noise` (B, V, C, h, w) override the draws (timesteps first, then noise)."""
        unet = self.teacher.parts.unet
        check_latents(latents, 5, unet.config.in_channels, "latents", "(B, V, C, h, w)")
        b, v = latents.shape[:2]
        cameras = torch.as_tensor(cameras)
        if tuple(cameras.shape) != (b, v, 4, 4):
            raise GuidanceInputError(f"cameras: expected {(b, v, 4, 4)} camera-to-world matrices, got {tuple(cameras.shape)}")
        cond, uncond = prompts.expand(b)
        if t is None:
            t = draw_timesteps(self.config.timesteps, step, b, self.scheduler, generator)
        t = torch.as_tensor(t, dtype=torch.int64).reshape(-1).expand(b).to(latents.device)
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        with torch.no_grad():
            noisy = add_noise(self.scheduler, latents.detach().float(), noise.float(), t)
            x, dt = noisy.to(unet.dtype), unet.dtype
            both = self.teacher.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]).to(dt),
                                        torch.cat([cameras, cameras]))
            pred_cond, pred_uncond = both.float().chunk(2)
            x0 = predicted_clean_latents(self.scheduler, noisy, guide(pred_cond, pred_uncond, self.config.guidance_scale), t)
            x0_cond = predicted_clean_latents(self.scheduler, noisy, pred_cond, t)
            target = torch.nan_to_num(rescale_guidance(x0, x0_cond, self.config.rescale))
        a = alphas_at(self.scheduler, t, noisy).reshape(-1)
        loss = distillation_loss(latents, target, self.config.normalisation, batch=b * v)
        return {"loss": loss, "t": t, "w": ((1 - a) / a).sqrt(), "grad_norm": (latents.detach().float() - target).norm(),
                "target": target}
