"""Score distillation from an image teacher: SDS (DreamFusion) and VSD (ProlificDreamer).

Both take renders (B, H, W, 3) in [0, 1] (differentiable), encode them with the teacher's VAE
to latents z (B, 4, h, w), noise them to x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps at one
timestep per image drawn from the config's annealed range, and return

    {"loss": the score-distillation loss (core.sds_loss), "t": (B,) timesteps,
     "w": (B,) weights 1 - abar_t, "grad_norm": ||grad|| over the batch}

- SDS (Poole et al. 2023, "DreamFusion: Text-to-3D using 2D Diffusion"): grad = w (eps_cfg - eps),
  eps_cfg the classifier-free guided noise prediction (DreamFusion's guidance 100).
- VSD (Wang et al. 2023, "ProlificDreamer: High-Fidelity and Diverse Text-to-3D Generation with
  Variational Score Distillation"): grad = w (eps_cfg - eps_lora), eps_lora the prediction of a
  LoRA copy of the U-Net conditioned on the render's camera and trained on the renders
  (`lora_loss`, the plain diffusion loss), so it follows the distribution of the current
  renders. The camera enters as in MVDream (Shi et al. 2024): a projection class embedding of
  the 16-number camera, zero-initialised (fourdistill.teachers.multiview.model); the LoRA is a
  PEFT adapter on the attention projections (`unet.add_adapter`).

Any prediction type works: the U-Net's outputs go through diffusion.schedule.predicted_noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..diffusion.guidance import guide, predict
from ..diffusion.schedule import TimestepAnnealing, predicted_noise, prediction_target
from ..teachers.multiview.model import camera_input, multiview_unet
from .core import (GuidanceInputError, LossSpace, Normalisation, PromptStates, add_noise, check_images, check_latents, check_loss_space,
                   clean_gradient, draw_timesteps, image_space_loss, prompt_states, sds_loss, sds_weight, teacher_resolution,
                   training_schedule, vae_encode)

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections (ProlificDreamer's LoRA layers)


@dataclass
class ImageSDSConfig:
    """guidance_scale: classifier-free guidance (DreamFusion: 100). timesteps: the annealed
    range of t (DreamFusion's U(0.02, 0.98) by default). normalisation: "mean" or "sum" (core).
    grad_clip: element-wise clamp of the gradient (None: off). resolution: pixels the renders are
    resized to before the VAE (None: the teacher's own). loss_space: "latent" (DreamFusion: the
    gradient reaches the renders through the VAE encoder) or "image" (the target decoded, the
    loss on the pixels: core.image_space_loss)."""

    guidance_scale: float = 100.0  # DreamFusion
    timesteps: TimestepAnnealing = field(default_factory=TimestepAnnealing)
    normalisation: Normalisation = "mean"
    grad_clip: float | None = None
    resolution: int | None = None
    loss_space: LossSpace = "latent"

    def __post_init__(self):
        check_loss_space(self.loss_space)


@dataclass
class VSDConfig(ImageSDSConfig):
    """ImageSDSConfig plus the LoRA: rank (alpha = rank), the camera guidance of the LoRA's own
    prediction (1: camera-conditioned only, threestudio's default), the probability a render's
    camera is dropped (zeroed) when the LoRA trains (ProlificDreamer: 0.1), and how many
    timesteps per render the LoRA trains on."""

    guidance_scale: float = 7.5  # ProlificDreamer, 4D-fy's image teacher
    lora_rank: int = 4
    lora_camera_guidance: float = 1.0
    camera_dropout: float = 0.1  # ProlificDreamer
    lora_timesteps_per_image: int = 1


class ImageSDS:
    """SDS from an image teacher: `parts` a fourdistill.teachers.parts.TeacherParts (its U-Net,
    VAE, text encoder and scheduler; the scheduler's noise schedule and prediction type are
    read, as a DDPM over the same schedule)."""

    config_class = ImageSDSConfig

    def __init__(self, parts, config: ImageSDSConfig | None = None):
        self.parts = parts
        self.config = config or self.config_class()
        self.scheduler = training_schedule(parts.scheduler)
        self.resolution = self.config.resolution or teacher_resolution(parts.vae, parts.unet)

    def prompts(self, captions, negative: str = "") -> PromptStates:
        """Text states of `captions` (cache them once per run)."""
        return prompt_states(self.parts.encode_text, captions, negative)

    def encode(self, images, generator=None) -> torch.Tensor:
        """Renders (B, H, W, 3) in [0, 1] -> latents (B, 4, h, w), differentiable."""
        check_images(images, 4, "images", "(B, H, W, 3)")
        return vae_encode(self.parts.vae, images, self.resolution, generator)

    def __call__(self, images, prompts: PromptStates, step: int = 0, generator=None, **kw) -> dict:
        if self.config.loss_space == "image":
            with torch.no_grad():
                latents = self.encode(images, generator)
            return self.in_pixels(images, self.latent_loss(latents, prompts, step, generator, **kw))
        return self.latent_loss(self.encode(images, generator), prompts, step, generator, **kw)

    def in_pixels(self, images, result: dict) -> dict:
        """`result` of latent_loss with its loss replaced by the image-space loss of the renders
        (B, H, W, 3) against its decoded target (core.image_space_loss)."""
        loss = image_space_loss(self.parts.vae, images, result["target"], self.resolution, self.config.normalisation)
        return {**result, "loss": loss}

    def _draw(self, latents, step, generator, t, noise):
        b = latents.shape[0]
        if t is None:
            t = draw_timesteps(self.config.timesteps, step, b, self.scheduler, generator)
        t = torch.as_tensor(t, dtype=torch.int64).reshape(-1).expand(b).to(latents.device)
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        return t, noise

    def _guided_noise(self, noisy, t, cond, uncond):
        unet = self.parts.unet
        x = noisy.to(unet.dtype)
        pred = predict(unet, x, t, cond.to(unet.dtype), guidance=self.config.guidance_scale, uncond_states=uncond.to(unet.dtype))
        return predicted_noise(self.scheduler, x.float(), pred.float(), t)

    def _finish(self, latents, grad, t, w) -> dict:
        grad = clean_gradient(grad, self.config.grad_clip)
        return {"loss": sds_loss(latents, grad, self.config.normalisation), "t": t, "w": w.reshape(-1),
                "grad_norm": grad.norm().detach(), "target": (latents.detach().float() - grad).detach()}

    def latent_loss(self, latents, prompts: PromptStates, step: int = 0, generator=None, t=None, noise=None) -> dict:
        """The SDS loss at latents (B, 4, h, w); `t` (B,) and `noise` (B, 4, h, w) override the
        draws (the timesteps first, then the noise, from `generator`)."""
        check_latents(latents, 4, self.parts.unet.config.in_channels, "latents", "(B, C, h, w)")
        cond, uncond = prompts.expand(latents.shape[0])
        t, noise = self._draw(latents, step, generator, t, noise)
        with torch.no_grad():
            noisy = add_noise(self.scheduler, latents.detach().float(), noise.float(), t)
            eps_cfg = self._guided_noise(noisy, t, cond, uncond)
        w = sds_weight(self.scheduler, t, noisy)
        return self._finish(latents, w * (eps_cfg - noise.float()), t, w)


def camera_lora_unet(unet, rank: int = 4):
    """A camera-conditioned LoRA copy of an image U-Net: MVDream's projection camera embedding
    (zero-initialised, so the copy starts equal to `unet`) and a PEFT LoRA of `rank` on the
    attention projections. Only the LoRA and the camera embedding are trainable."""
    from peft import LoraConfig

    if int(rank) < 1:
        raise GuidanceInputError(f"lora_rank must be >= 1, got {rank}")
    lora = multiview_unet(unet, num_views=1).requires_grad_(False)
    lora.add_adapter(LoraConfig(r=int(rank), lora_alpha=int(rank), init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)))
    lora.class_embedding.requires_grad_(True)
    return lora.train()


class ImageVSD(ImageSDS):
    """VSD from an image teacher: ImageSDS's inputs plus the renders' cameras (B, 4, 4)
    camera-to-world; `lora_unet` trains through `lora_loss` with the recipe's optimizer over
    `lora_parameters()`."""

    config_class = VSDConfig

    def __init__(self, parts, config: VSDConfig | None = None):
        super().__init__(parts, config)
        self.lora_unet = camera_lora_unet(parts.unet, self.config.lora_rank)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.lora_unet.parameters() if p.requires_grad]

    def _cameras(self, cameras, b, device):
        cameras = torch.as_tensor(cameras)
        if tuple(cameras.shape) != (b, 4, 4):
            raise GuidanceInputError(f"cameras: expected ({b}, 4, 4) camera-to-world matrices, got {tuple(cameras.shape)}")
        return camera_input(cameras).to(device)

    def _lora_output(self, x, t, cond, cam):
        return self.lora_unet(x, t, encoder_hidden_states=cond, class_labels=cam).sample

    def __call__(self, images, prompts: PromptStates, cameras, step: int = 0, generator=None, **kw) -> dict:
        if self.config.loss_space == "image":
            with torch.no_grad():
                latents = self.encode(images, generator)
            return self.in_pixels(images, self.latent_loss(latents, prompts, cameras, step, generator, **kw))
        return self.latent_loss(self.encode(images, generator), prompts, cameras, step, generator, **kw)

    def latent_loss(self, latents, prompts: PromptStates, cameras, step: int = 0, generator=None, t=None, noise=None) -> dict:
        """The VSD loss at latents (B, 4, h, w) rendered from cameras (B, 4, 4)."""
        check_latents(latents, 4, self.parts.unet.config.in_channels, "latents", "(B, C, h, w)")
        b = latents.shape[0]
        cam = self._cameras(cameras, b, latents.device)
        cond, uncond = prompts.expand(b)
        t, noise = self._draw(latents, step, generator, t, noise)
        dtype = self.lora_unet.dtype
        with torch.no_grad():
            noisy = add_noise(self.scheduler, latents.detach().float(), noise.float(), t)
            eps_cfg = self._guided_noise(noisy, t, cond, uncond)
            x, c = noisy.to(dtype), cond.to(dtype)
            pred = self._lora_output(x, t, c, cam.to(dtype))
            s = self.config.lora_camera_guidance
            if s != 1.0:
                pred = guide(pred, self._lora_output(x, t, c, torch.zeros_like(cam, dtype=dtype)), s)
            eps_lora = predicted_noise(self.scheduler, noisy, pred.float(), t)
        w = sds_weight(self.scheduler, t, noisy)
        return self._finish(latents, w * (eps_cfg - eps_lora), t, w)

    def lora_loss(self, latents, prompts: PromptStates, cameras, generator=None) -> torch.Tensor:
        """ProlificDreamer's LoRA loss: the plain diffusion loss (mean squared error to the
        scheduler's prediction target) of the LoRA U-Net on the detached render latents
        (B, 4, h, w), t ~ U[0, T) (`lora_timesteps_per_image` draws each), the caption's text
        states, each camera zeroed with probability camera_dropout. Gradients reach only
        lora_parameters()."""
        check_latents(latents, 4, self.parts.unet.config.in_channels, "latents", "(B, C, h, w)")
        b, k = latents.shape[0], int(self.config.lora_timesteps_per_image)
        cam = self._cameras(cameras, b, latents.device)
        cond, _ = prompts.expand(b)
        z = latents.detach().float().repeat(k, 1, 1, 1)
        n_train = int(self.scheduler.config.num_train_timesteps)
        t = torch.randint(0, n_train, (b * k,), generator=generator).to(z.device)
        noise = torch.randn(z.shape, generator=generator).to(z.device)
        keep = (torch.rand(b * k, generator=generator) >= self.config.camera_dropout).to(z.device)
        cam = cam.repeat(k, 1) * keep[:, None].to(cam.dtype)
        dtype = self.lora_unet.dtype
        noisy = add_noise(self.scheduler, z, noise, t)
        pred = self._lora_output(noisy.to(dtype), t, cond.repeat(k, 1, 1).to(dtype), cam.to(dtype))
        return F.mse_loss(pred.float(), prediction_target(self.scheduler, z, noise, t).float())

