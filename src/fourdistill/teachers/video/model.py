"""The AnimateDiff motion adapter (Guo et al. 2024, "AnimateDiff: Animate Your Personalized
Text-to-Image Diffusion Models without Specific Tuning") sized for an image stack's U-Net.

AnimateDiff keeps a text-to-image U-Net frozen and inserts a temporal transformer ("motion
module") after every spatial block: at each pixel of each feature map it attends over the F
frames of a clip (sinusoidal frame positions up to `motion_max_seq_length`), so frames see each
other only there. diffusers holds the motion modules alone in a `MotionAdapter` and builds the
video U-Net with `UNetMotionModel.from_unet2d(unet2d, adapter)`: the image U-Net's weights plus
the adapter's, the call AnimateDiffPipeline makes.

Shapes: latents are (B, C, F, H, W) (batch, latent channels, frames, height, width), as
UNetMotionModel and UNet3DConditionModel take and return them; the U-Net folds the frames into
the batch, (B F) C H W, for its spatial layers and unfolds them for the motion modules,
(B H W) F C.

The original implementation zero-initialises each motion module's output projection
(`zero_initialize=True`, `proj_out = zero_module(proj_out)`), so an untrained adapter adds
nothing to the residual stream and the video U-Net is the image U-Net applied to every frame.
diffusers' MotionAdapter does not (its `proj_out` is a default-initialised Linear);
`build_motion_adapter` zeroes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import MotionAdapter, UNetMotionModel


class ClipLengthError(ValueError):
    """A clip whose frame count the video U-Net cannot take; the message names the argument."""


@dataclass
class MotionConfig:
    """The motion modules' own sizes; the rest (channels, layers per block, group norm groups)
    follows the image U-Net (`adapter_kwargs`).

    motion_num_attention_heads: heads of each temporal attention (AnimateDiff: 8 at 320..1280
    channels; 4 here, as the embedded stack's spatial attention, for 16- and 32-wide heads at
    its 64 and 128 channels).
    motion_max_seq_length: the longest clip, the length of the sinusoidal frame-position table
    (AnimateDiff: 32, trained on 16-frame clips).
    """

    motion_num_attention_heads: int = 4
    motion_max_seq_length: int = 32  # AnimateDiff's
    motion_transformer_layers_per_block: int = 1  # AnimateDiff's
    use_motion_mid_block: bool = True  # AnimateDiff v2 / v3 have one

    def __post_init__(self):
        if self.motion_num_attention_heads < 1:
            raise ValueError(f"motion_num_attention_heads must be >= 1, got {self.motion_num_attention_heads}")
        if self.motion_max_seq_length < 1:
            raise ValueError(f"motion_max_seq_length must be >= 1, got {self.motion_max_seq_length}")
        if self.motion_transformer_layers_per_block < 1:
            raise ValueError(f"motion_transformer_layers_per_block must be >= 1, got {self.motion_transformer_layers_per_block}")


def adapter_kwargs(unet2d, cfg: MotionConfig | None = None) -> dict:
    """MotionAdapter keyword arguments that fit the image U-Net `unet2d` (a UNet2DConditionModel
    or its config): one motion module per resnet of each down block (layers_per_block; the up
    blocks get one more, as their resnets), at that block's channels, with the U-Net's own group
    norm groups (what `UNetMotionModel.from_unet2d` builds the modules with)."""
    cfg = cfg or MotionConfig()
    config = getattr(unet2d, "config", unet2d)
    channels = tuple(int(c) for c in config["block_out_channels"])
    groups = int(config["norm_num_groups"])
    heads = cfg.motion_num_attention_heads
    for c in channels:
        if c % groups:
            raise ValueError(f"block_out_channels {channels}: {c} is not a multiple of norm_num_groups {groups}")
        if c % heads:
            raise ValueError(f"motion_num_attention_heads {heads} does not divide the block's {c} channels")
    layers = config["layers_per_block"]
    return dict(
        block_out_channels=channels,
        motion_layers_per_block=int(layers) if isinstance(layers, int) else tuple(int(n) for n in layers),
        motion_transformer_layers_per_block=cfg.motion_transformer_layers_per_block,
        motion_mid_block_layers_per_block=1,
        motion_transformer_layers_per_mid_block=cfg.motion_transformer_layers_per_block,
        motion_num_attention_heads=heads,
        motion_norm_num_groups=groups,
        motion_max_seq_length=cfg.motion_max_seq_length,
        use_motion_mid_block=cfg.use_motion_mid_block,
    )


def motion_transformers(module) -> list:
    """The AnimateDiffTransformer3D motion modules inside a MotionAdapter or UNetMotionModel."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    return [m for m in module.modules() if isinstance(m, AnimateDiffTransformer3D)]


@torch.no_grad()
def zero_output_projections(module) -> None:
    """Zero every motion module's output projection (AnimateDiff's zero_initialize): the module
    then returns its input, so the clip's frames are denoised independently."""
    for m in motion_transformers(module):
        m.proj_out.weight.zero_()
        m.proj_out.bias.zero_()


def build_motion_adapter(unet2d, cfg: MotionConfig | None = None, seed: int | None = 0) -> MotionAdapter:
    """A fresh MotionAdapter for `unet2d` with zero output projections (float32). `seed`: the
    torch seed of its other weights (None: the current random state)."""
    if seed is not None:
        torch.manual_seed(seed)
    adapter = MotionAdapter(**adapter_kwargs(unet2d, cfg))
    zero_output_projections(adapter)
    return adapter


def build_motion_unet(unet2d, adapter: MotionAdapter) -> UNetMotionModel:
    """UNetMotionModel.from_unet2d(unet2d, adapter) with the spatial layers frozen: only the
    motion modules require gradients (`motion_parameters`). In `unet2d`'s dtype and device."""
    model = UNetMotionModel.from_unet2d(unet2d, adapter)
    model.freeze_unet2d_params()
    return model


def motion_parameters(model) -> list[torch.nn.Parameter]:
    """The motion modules' parameters of a UNetMotionModel (what training moves), in
    named_parameters order."""
    return [p for n, p in model.named_parameters() if ".motion_modules." in n]


def motion_state_dict(model) -> dict[str, torch.Tensor]:
    """The motion modules' weights of a UNetMotionModel under the MotionAdapter's own keys (the
    keys match: `down_blocks.i.motion_modules...`, `mid_block.motion_modules...`)."""
    return {k: v for k, v in model.state_dict().items() if ".motion_modules." in k}


def extract_adapter(model, dtype=None) -> MotionAdapter:
    """The MotionAdapter a UNetMotionModel's motion modules make up (what `save_pretrained`
    writes; diffusers' `save_motion_modules` without its loss of the layer counts), in `dtype`
    (default: the model's)."""
    config = model.config
    adapter = MotionAdapter(
        block_out_channels=tuple(config["block_out_channels"]),
        motion_layers_per_block=config["layers_per_block"],
        motion_transformer_layers_per_block=config["temporal_transformer_layers_per_block"],
        motion_transformer_layers_per_mid_block=config["temporal_transformer_layers_per_mid_block"],
        motion_num_attention_heads=config["motion_num_attention_heads"],
        motion_norm_num_groups=config["norm_num_groups"],
        motion_max_seq_length=config["motion_max_seq_length"],
        use_motion_mid_block=config["use_motion_mid_block"],
    )
    adapter.load_state_dict(motion_state_dict(model))
    return adapter.to(dtype or model.dtype)


def max_frames(unet) -> int | None:
    """The longest clip `unet` takes: a UNetMotionModel's motion_max_seq_length (its frame
    position table); None for a U-Net without one (UNet3DConditionModel's temporal attention
    has no positions)."""
    if isinstance(unet, UNetMotionModel):
        return int(unet.config["motion_max_seq_length"])
    return None


def check_clip_length(unet, frames: int, what: str = "latents") -> None:
    """ClipLengthError naming `what` unless `unet` takes clips of `frames` frames."""
    if frames < 1:
        raise ClipLengthError(f"{what}: a clip needs at least 1 frame, got {frames}")
    longest = max_frames(unet)
    if longest is not None and frames > longest:
        raise ClipLengthError(
            f"{what}: a clip of {frames} frames is longer than the motion adapter's motion_max_seq_length {longest} (its frame positions)"
        )


def video_unet_output(unet, latents: torch.Tensor, timesteps, text_states: torch.Tensor) -> torch.Tensor:
    """The output of a video U-Net (UNetMotionModel or UNet3DConditionModel) for latents
    (B, C, F, H, W) at timesteps (B,) or one number, on text states (B, L, D) (one caption per
    clip, shared by its frames); returns (B, C', F, H, W) (the model's prediction type).

    UNetMotionModel reads one text state per frame, (B F) L D (AnimateDiffPipeline repeats them
    so), UNet3DConditionModel one per clip and repeats them itself."""
    if latents.ndim != 5:
        raise ValueError(f"latents: expected (B, C, F, H, W), got shape {tuple(latents.shape)}")
    b, _, frames = latents.shape[:3]
    check_clip_length(unet, frames)
    if text_states.ndim != 3 or text_states.shape[0] != b:
        raise ValueError(f"text_states: expected ({b}, L, D) for {b} clips, got shape {tuple(text_states.shape)}")
    if isinstance(unet, UNetMotionModel):
        text_states = text_states.repeat_interleave(frames, dim=0)
    return unet(latents, timesteps, encoder_hidden_states=text_states).sample
