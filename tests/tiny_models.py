"""Tiny randomly initialised models of the real classes, for tests of the conditioning path."""

from __future__ import annotations

import json
import string

import torch


def tiny_tokenizer(folder):
    """A CLIPTokenizer over single characters (no merges): every word splits into letters."""
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + ".,'-!?<>"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32)


def tiny_text_encoder(vocab_size: int, width: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(cfg).eval().requires_grad_(False)


def tiny_unet(cross_attention_dim: int = 32, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval().requires_grad_(False)


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval().requires_grad_(False)


def tiny_pipeline(folder):
    """A StableDiffusionPipeline of tiny random models (16x16 images, 8x8 latents)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    tok = tiny_tokenizer(folder / "tokenizer")
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(len(tok)),
        tokenizer=tok,
        unet=tiny_unet(),
        scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_stack_config():
    """The StackConfig of a tiny embedded-layout stack (seconds to build and run on a CPU)."""
    from fourdistill.teachers.image.stack import ImageEncoderConfig, IPAdapterConfig, StackConfig, TextEncoderConfig, UNetConfig, VaeConfig

    return StackConfig(
        text=TextEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vae=VaeConfig(block_out_channels=(8, 16, 16), norm_num_groups=8),
        unet=UNetConfig(block_out_channels=(16, 32, 32), norm_num_groups=8, attention_head_dim=2),
        image_encoder=ImageEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ip_adapter=IPAdapterConfig(num_tokens=4, hidden_dims=64),
    )


def tiny_stack_folder(folder):
    """A randomly initialised embedded-layout stack (SD folder + h94 IP-Adapter files) in `folder`."""
    from fourdistill.teachers.image.stack import build_stack, save_stack
    from fourdistill.teachers.image.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(folder / "tokenizer-src")
    return save_stack(build_stack(tiny_stack_config(), tokenizer, seed=0), folder / "stack")
