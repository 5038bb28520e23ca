"""MVDream's original checkpoint layout <-> diffusers' UNet2DConditionModel.

MVDream's released weights (`sd-v2.1-base-4view.pt`, Shi et al. 2024) are a latent-diffusion
(ldm) checkpoint: the U-Net under `model.diffusion_model.` in the SD 2.1 key layout, plus the
camera MLP `camera_embed.0` (linear) and `camera_embed.2` (linear; `.1` is the SiLU).

- `from_mvdream`: original -> diffusers. The SD U-Net keys go through diffusers' own
  single-file conversion (`convert_ldm_unet_checkpoint`); the camera MLP becomes
  `class_embedding.linear_1/2` (model.py: the projection class embedding).
- `to_mvdream`: diffusers -> original, the inverse (to export a trained teacher for MVDream's
  code, and to test `from_mvdream` on a tiny checkpoint).

Both take a diffusers U-Net config (block counts decide the ldm block indices).
"""

from __future__ import annotations

import re

from .model import MultiViewError, is_multiview_config

LDM_UNET_PREFIX = "model.diffusion_model."
CAMERA_KEYS = {"camera_embed.0": "class_embedding.linear_1", "camera_embed.2": "class_embedding.linear_2"}
# diffusers' single-file conversion reads a projection class embedding from label_emb.0.{0,2}
_LDM_CLASS_EMBED = {"camera_embed.0": "label_emb.0.0", "camera_embed.2": "label_emb.0.2"}

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def is_mvdream_state(state: dict) -> bool:
    """Whether a state dict is in MVDream's original layout (a camera MLP and ldm U-Net keys)."""
    return any(k.startswith(LDM_UNET_PREFIX + "camera_embed.") for k in state)


def from_mvdream(state: dict, config, where="checkpoint") -> dict:
    """An MVDream original state dict -> a diffusers UNet2DConditionModel state dict for
    `config` (which must be in the multi-view layout). `where` names the file in errors."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = dict(config)
    if not is_multiview_config(config):
        raise MultiViewError(f"{where}: the U-Net config is not MVDream's layout (class_embed_type 'projection' with 16 inputs)")
    if not is_mvdream_state(state):
        raise MultiViewError(f"{where}: not an MVDream checkpoint (no {LDM_UNET_PREFIX}camera_embed.* keys)")
    renamed = {}
    for key, value in state.items():
        if not key.startswith(LDM_UNET_PREFIX):
            continue  # the VAE and text encoder of a full checkpoint are taken from the base stack
        inner = key[len(LDM_UNET_PREFIX):]
        for old, new in _LDM_CLASS_EMBED.items():
            if inner.startswith(old + "."):
                inner = new + inner[len(old):]
        renamed[LDM_UNET_PREFIX + inner] = value
    try:
        converted = convert_ldm_unet_checkpoint(renamed, config)
    except (KeyError, IndexError, RuntimeError) as exc:
        raise MultiViewError(f"{where}: the MVDream U-Net does not match the config ({type(exc).__name__}: {exc})") from None
    return converted


def to_mvdream(state: dict, config) -> dict:
    """A diffusers multi-view U-Net state dict -> MVDream's original layout (keys prefixed
    `model.diffusion_model.`). Inverse of from_mvdream for SD-layout U-Nets."""
    config = dict(config)
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise MultiViewError("to_mvdream: per-block layers_per_block lists are not supported")
    attn_down = ["CrossAttn" in t for t in config["down_block_types"]]
    attn_up = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        out[LDM_UNET_PREFIX + _ldm_key(key, layers, attn_up)] = value
    del attn_down
    return out


def _ldm_key(key: str, layers: int, attn_up: list[bool]) -> str:
    for new, old in CAMERA_KEYS.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    for new, old in _TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        base = 1 + i * (layers + 1)
        if kind == "downsamplers":
            return f"input_blocks.{base + layers}.0.op.{rest.removeprefix('conv.')}"
        if kind == "resnets":
            return f"input_blocks.{base + j}.0.{_resnet_key(rest)}"
        return f"input_blocks.{base + j}.1.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if j == 0 else 2}.{_resnet_key(rest)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        base = i * (layers + 1)
        if kind == "upsamplers":
            return f"output_blocks.{base + layers}.{2 if attn_up[i] else 1}.{rest}"
        if kind == "resnets":
            return f"output_blocks.{base + j}.0.{_resnet_key(rest)}"
        return f"output_blocks.{base + j}.1.{rest}"
    raise MultiViewError(f"to_mvdream: no MVDream key for the U-Net weight {key!r}")


def _resnet_key(rest: str) -> str:
    name, _, tail = rest.partition(".")
    if name not in _RESNET:
        raise MultiViewError(f"to_mvdream: unknown ResNet weight {rest!r}")
    return f"{_RESNET[name]}.{tail}"
