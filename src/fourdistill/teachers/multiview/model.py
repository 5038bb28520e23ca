"""The multi-view teacher's network: a Stable-Diffusion U-Net in MVDream's layout.

MVDream (Shi et al. 2024, "MVDream: Multi-view Diffusion for 3D Generation") makes a text-to-
image U-Net generate V views of one object at once with two changes, both expressible in
diffusers' own `UNet2DConditionModel`:

- **Camera embedding.** A two-layer MLP (linear, SiLU, linear) of the camera, added to the
  timestep embedding. That is `class_embed_type="projection"` with
  `projection_class_embeddings_input_dim=16`: diffusers' `TimestepEmbedding(16, D)` holds
  `linear_1`, SiLU and `linear_2`, and the U-Net adds it to the timestep embedding.
  The camera is MVDream's: the 4x4 camera-to-world matrix with its translation normalised to
  unit length, flattened to 16 numbers (`camera_input`). Cameras are in the world's convention
  (`fourdistill.cameras`: z-up world, OpenGL camera axes), which is also the one MVDream's
  released model was trained with (threestudio's).
- **Shared self-attention.** The V views of one sample attend to each other: in every
  self-attention (`attn1`) layer the tokens of the V views are folded into one sequence,
  (B V) L C -> B (V L) C, attended, and unfolded (`MultiViewAttnProcessor`). Cross-attention
  to the caption stays per view.

A U-Net is turned into the layout with `multiview_unet(unet)`: the same weights plus a camera
MLP whose last layer starts at zero, so before training the model equals the image U-Net view
by view (MVDream initialises from SD 2.1 the same way).

Shapes: latents (B, V, C, h, w); cameras (B, V, 4, 4); timesteps (B,), one per sample and
shared by its V views (MVDream); text states (B, 77, D), shared by the views.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

CAMERA_DIM = 16  # MVDream: the flattened 4x4 camera-to-world matrix
NUM_VIEWS = 4  # MVDream's released model and 4D-fy: 4 views, 90 degrees apart


class MultiViewError(ValueError):
    """An input the multi-view teacher cannot take; the message names the argument."""


def camera_input(c2w) -> torch.Tensor:
    """MVDream's camera condition: (..., 4, 4) camera-to-world -> (..., 16), the matrix with
    its translation scaled to unit length, flattened row by row."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    if c2w.ndim < 2 or tuple(c2w.shape[-2:]) != (4, 4):
        raise MultiViewError(f"cameras: expected camera-to-world matrices of shape (..., 4, 4), got {tuple(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise MultiViewError("cameras: non-finite entries")
    c2w = c2w.clone()
    t = c2w[..., :3, 3]
    norm = t.norm(dim=-1, keepdim=True)
    if (norm < 1e-8).any():
        raise MultiViewError("cameras: a camera sits at the origin (its translation cannot be normalised)")
    c2w[..., :3, 3] = t / norm
    return c2w.flatten(-2)


class MultiViewAttnProcessor(AttnProcessor2_0):
    """Self-attention across the V views of each sample: (B V) L C -> B (V L) C, attend,
    unfold. With num_views 1 it is diffusers' AttnProcessor2_0 exactly. Used on `attn1`
    layers only (cross-attention has encoder_hidden_states and is left per view)."""

    def __init__(self, num_views: int):
        super().__init__()
        if int(num_views) < 1:
            raise MultiViewError(f"num_views must be >= 1, got {num_views}")
        self.num_views = int(num_views)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        v = self.num_views
        if v == 1 or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if hidden_states.ndim != 3:
            raise MultiViewError(f"multi-view attention expects tokens (B V, L, C), got shape {tuple(hidden_states.shape)}")
        n, length, channels = hidden_states.shape
        if n % v:
            raise MultiViewError(f"a batch of {n} images is not a whole number of {v}-view sets (the processor was built for {v} views)")
        if attention_mask is not None:
            raise MultiViewError("multi-view self-attention takes no attention mask")
        folded = hidden_states.reshape(n // v, v * length, channels)
        out = super().__call__(attn, folded, None, None, temb, *args, **kwargs)
        return out.reshape(n, length, channels)


def set_multiview(unet: UNet2DConditionModel, num_views: int) -> None:
    """Put MultiViewAttnProcessor(num_views) on every self-attention layer of `unet` (every
    other layer keeps its processor); num_views 1 restores plain attention there."""
    processors = {}
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            processors[name] = MultiViewAttnProcessor(num_views) if num_views > 1 else AttnProcessor2_0()
        else:
            processors[name] = proc
    unet.set_attn_processor(processors)


def num_views_of(unet: UNet2DConditionModel) -> int:
    """How many views `unet`'s self-attention folds (1: plain)."""
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            return getattr(proc, "num_views", 1)
    return 1


def multiview_config(config) -> dict:
    """A U-Net config in MVDream's layout: `config` plus the projection camera embedding."""
    config = dict(config)
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM)
    return {k: v for k, v in config.items() if not k.startswith("_")}


def is_multiview_config(config) -> bool:
    return config.get("class_embed_type") == "projection" and config.get("projection_class_embeddings_input_dim") == CAMERA_DIM


def multiview_unet(unet: UNet2DConditionModel, num_views: int = NUM_VIEWS) -> UNet2DConditionModel:
    """A copy of the image U-Net in MVDream's layout: the same weights, a camera MLP whose last
    layer is zero (so the output equals the image U-Net's, view by view, until it trains) and
    multi-view self-attention over `num_views` views."""
    mv = UNet2DConditionModel.from_config(multiview_config(unet.config))
    missing, unexpected = mv.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise MultiViewError(f"the U-Net does not fit MVDream's layout (missing {missing[:3]}, unexpected {unexpected[:3]})")
    torch.nn.init.zeros_(mv.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(mv.class_embedding.linear_2.bias)
    if mv.dtype != unet.dtype:
        mv.to(dtype=unet.dtype)
    set_multiview(mv, num_views)
    return mv


def predict_views(unet: UNet2DConditionModel, latents, timesteps, text_states, cameras):
    """The U-Net's output for V views: latents (B, V, C, h, w), timesteps (B,) shared by the
    views, text states (B, L, D) shared by the views, cameras (B, V, 4, 4) -> (B, V, C, h, w).
    The U-Net's self-attention must fold exactly V views (set_multiview)."""
    if latents.ndim != 5:
        raise MultiViewError(f"latents: expected (B, V, C, h, w), got shape {tuple(latents.shape)}")
    b, v = latents.shape[:2]
    cameras = torch.as_tensor(cameras)
    if tuple(cameras.shape) != (b, v, 4, 4):
        raise MultiViewError(f"cameras: expected shape {(b, v, 4, 4)} for latents of {v} views, got {tuple(cameras.shape)}")
    built = num_views_of(unet)
    if built != v:
        raise MultiViewError(f"latents have {v} views but the U-Net's attention was built for {built} (set_multiview)")
    timesteps = torch.as_tensor(timesteps, device=latents.device)
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(b)
    cam = camera_input(cameras).to(latents.device, latents.dtype).reshape(b * v, CAMERA_DIM)
    out = unet(
        latents.reshape(b * v, *latents.shape[2:]),
        timesteps.repeat_interleave(v),
        encoder_hidden_states=text_states.repeat_interleave(v, dim=0),
        class_labels=cam,
    ).sample
    return out.reshape(latents.shape)
