"""The tiny Stable-Diffusion-layout stack: configs, construction, and the folder layout.

Every piece is the standard class (CLIPTextModel, AutoencoderKL, UNet2DConditionModel,
CLIPVisionModelWithProjection, the schedulers), saved with `save_pretrained` into the folder
layout of a Stable Diffusion repository plus an h94/IP-Adapter `models/` folder:

    model_index.json
    tokenizer/        vocab.json, merges.txt, tokenizer_config.json
    text_encoder/     config.json, model.safetensors
    vae/              config.json, diffusion_pytorch_model.safetensors
    unet/             config.json, diffusion_pytorch_model.safetensors
    scheduler/        scheduler_config.json (DPM-Solver multistep: diffusion.schedule.inference_scheduler)
    models/           ip-adapter-plus_tiny.safetensors, image_encoder/ (config.json, model.safetensors)

so `StableDiffusionPipeline.from_pretrained(folder)` followed by
`pipe.load_ip_adapter(folder, subfolder="models", weight_name=IP_ADAPTER_WEIGHT_NAME)` loads it,
the same two calls that load SD 1.5 and h94/IP-Adapter.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from ...diffusion.schedule import NoiseConfig, inference_scheduler  # NoiseConfig: part of the saved StackConfig
from ...io import atomic_dir, write_json
from .ip_adapter import init_ip_adapter_state, install_ip_adapter, ip_adapter_state_dict, save_ip_adapter
from .tokenizer import write_vocab_files

IP_ADAPTER_SUBFOLDER = "models"

@dataclass
class TextEncoderConfig:
    """A small CLIPTextModel. hidden_size is the word dimension the mappers write (SD 1.x: 768)."""
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 77  # CLIP's context length


@dataclass
class VaeConfig:
    """AutoencoderKL with two downsamplings: 64x64 images <-> 4x16x16 latents."""
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8


@dataclass
class UNetConfig:
    """UNet2DConditionModel with SD's cross-attention blocks (CrossAttnDownBlock2D,
    UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D) on 16x16 latents."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 4  # heads per attention layer, as SD 1.x's config spells it (8 there)
    norm_num_groups: int = 16


@dataclass
class ImageEncoderConfig:
    """A small CLIPVisionModelWithProjection on 64x64 images (8x8 patches -> 64 tokens + CLS)."""
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    patch_size: int = 8


@dataclass
class IPAdapterConfig:
    """IP-Adapter-Plus resampler (docs/method.md, 1.4: the reference implementation uses IP-Adapter-Plus, 16 tokens).

    hidden_dims must be a multiple of 64: diffusers' loader infers heads = hidden_dims / 64 and
    builds depth 4, so those two are fixed by the file format.
    """

    num_tokens: int = 16  # IP-Adapter-Plus: 16 image tokens
    hidden_dims: int = 128
    depth: int = 4  # fixed by diffusers' loader


@dataclass
class StackConfig:
    resolution: int = 64
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    ip_adapter: IPAdapterConfig = field(default_factory=IPAdapterConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StackConfig":
        def tuples(sub):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}

        return cls(
            resolution=int(d.get("resolution", 64)),
            text=TextEncoderConfig(**tuples(d.get("text", {}))),
            vae=VaeConfig(**tuples(d.get("vae", {}))),
            unet=UNetConfig(**tuples(d.get("unet", {}))),
            image_encoder=ImageEncoderConfig(**tuples(d.get("image_encoder", {}))),
            ip_adapter=IPAdapterConfig(**tuples(d.get("ip_adapter", {}))),
            noise=NoiseConfig(**d.get("noise", {})),  # stacks saved before it: SD 1.x's epsilon
        )


def build_text_encoder(cfg: TextEncoderConfig, tokenizer):
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            projection_dim=cfg.hidden_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_vae(cfg: VaeConfig, resolution: int):
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=resolution,
        scaling_factor=1.0,  # measured after VAE training (set_vae_scaling_factor)
    )


def build_unet(cfg: UNetConfig, latent_size: int, cross_attention_dim: int):
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=tuple(cfg.down_block_types),
        up_block_types=tuple(cfg.up_block_types),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def build_image_encoder(cfg: ImageEncoderConfig, resolution: int, projection_dim: int):
    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            image_size=resolution,
            patch_size=cfg.patch_size,
            projection_dim=projection_dim,
        )
    )


def latent_size(cfg: StackConfig) -> int:
    return cfg.resolution // 2 ** (len(cfg.vae.block_out_channels) - 1)


@dataclass
class Stack:
    """The trainable parts, in memory. `image_proj` and the U-Net's IP-Adapter processors hold
    the IP-Adapter weights in diffusers' own modules."""
    config: StackConfig
    tokenizer: object
    text_encoder: object
    vae: object
    unet: object
    image_encoder: object
    image_proj: object

    def ip_attn_processors(self) -> dict:
        """name -> IPAdapterAttnProcessor2_0 of every cross-attention (attn2) layer, in U-Net order."""
        return {k: v for k, v in self.unet.attn_processors.items() if hasattr(v, "to_k_ip")}


def build_stack(cfg: StackConfig, tokenizer, seed: int = 0) -> Stack:
    """A freshly initialised stack (seeded), with the IP-Adapter installed in the U-Net."""


    torch.manual_seed(seed)
    text_encoder = build_text_encoder(cfg.text, tokenizer)
    vae = build_vae(cfg.vae, cfg.resolution)
    unet = build_unet(cfg.unet, latent_size(cfg), cfg.text.hidden_size)
    image_encoder = build_image_encoder(cfg.image_encoder, cfg.resolution, cfg.text.hidden_size)
    state = init_ip_adapter_state(unet, cfg.image_encoder.hidden_size, cfg.ip_adapter, seed=seed)
    image_proj = install_ip_adapter(unet, state)
    return Stack(cfg, tokenizer, text_encoder, vae, unet, image_encoder, image_proj)


def save_stack(stack: Stack, folder) -> Path:
    """Write the stack in the Stable Diffusion + h94/IP-Adapter layout (atomically: the folder
    appears complete or not at all). Returns the folder."""


    folder = Path(folder)
    with atomic_dir(folder, overwrite=True) as tmp:
        pipe = StableDiffusionPipeline(
            vae=stack.vae,
            text_encoder=stack.text_encoder,
            tokenizer=stack.tokenizer,
            unet=_unet_without_ip_adapter(stack.unet),
            scheduler=inference_scheduler(stack.config.noise),
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)
        if (tmp / "tokenizer" / "tokenizer.json").is_file():
            write_vocab_files(tmp / "tokenizer")
        with torch.no_grad():
            state = ip_adapter_state_dict(stack.unet, stack.image_proj)
        save_ip_adapter(tmp / IP_ADAPTER_SUBFOLDER, state, stack.image_encoder)
        write_json(tmp / "fourdistill_stack.json", stack.config.to_dict())
        _drop_source_paths(tmp)
    return folder


def _drop_source_paths(folder: Path) -> None:
    """Remove the `_name_or_path` entries diffusers/transformers record from where a model was
    loaded: a shipped folder must not carry the paths of the machine that wrote it."""
    for path in folder.rglob("*.json"):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "_name_or_path" in data:
            del data["_name_or_path"]
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _unet_without_ip_adapter(unet):
    """A copy of the U-Net with plain attention processors: the IP-Adapter weights live in
    models/, not in the U-Net's own file, exactly as with SD 1.5 and h94/IP-Adapter."""


    plain = copy.deepcopy(unet)
    plain.set_attn_processor(AttnProcessor2_0())
    plain.encoder_hid_proj = None
    plain.config.encoder_hid_dim_type = None
    plain.register_to_config(encoder_hid_dim_type=None, encoder_hid_dim=None)
    return plain


def read_stack_config(folder) -> StackConfig:
    path = Path(folder) / "fourdistill_stack.json"
    return StackConfig.from_dict(json.loads(path.read_text())) if path.exists() else StackConfig()
