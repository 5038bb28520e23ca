"""Training the video teacher (the `TeacherKind` of teachers.finetune).

AnimateDiff (Guo et al. 2024) freezes the text-to-image U-Net and trains only the motion
modules, on 16-frame clips, with the image model's own diffusion loss; here the image model is
the embedded stack, the clips are T-frame world clips of one camera over the scene's time
(teachers.data.render_world_set mode "clips", 4D-fy's frame times), with their captions, and
the loss is the stack's (v-prediction on its zero-terminal-SNR schedule), one timestep per clip.
The motion modules start with zero output projections, so step 0 is the image model on every
frame.

The finished teacher is a MotionAdapter folder (config.json, diffusion_pytorch_model.safetensors,
float16 when `store_float16`), the VIDEO_INFO_NAME description (clip length, base stack, the
run's settings) and the model card; `load_video_teacher(folder)` reads it through
AnimateDiffPipeline.from_pretrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .load import VIDEO_INFO_NAME
from .model import (MotionConfig, build_motion_adapter, build_motion_unet, check_clip_length, extract_adapter,
                    motion_parameters, video_unet_output)


class VideoKind:
    """The video TeacherKind (see teachers.finetune): trainable = the motion modules only."""

    name = "video"
    mode = "clips"

    def build(self, parts, cfg):
        adapter = build_motion_adapter(parts.unet, MotionConfig(), seed=cfg.seed)
        model = build_motion_unet(parts.unet, adapter)
        check_clip_length(model, cfg.n_frames, "n_frames")
        return model

    def trainable(self, model):
        return motion_parameters(model)

    def predict(self, model, noisy, timesteps, text_states, batch):
        """(B, F, C, h, w) clips (the trainer's set axis second) -> the same shape."""
        return video_unet_output(model, noisy.transpose(1, 2), timesteps, text_states).transpose(1, 2)

    def save(self, model, parts, folder, info):
        cfg = info["config"]
        return save_video_teacher(model, folder, cfg["base"], cfg["n_frames"], info, float16=cfg["store_float16"],
                                  card=model_card(info))


VIDEO = VideoKind()


def save_video_teacher(model, folder, base: str, num_frames: int, info: dict | None = None, float16: bool = True,
                       card: str | None = None) -> Path:
    """Write a UNetMotionModel's motion modules as a MotionAdapter folder (float16 weights when
    `float16`; they load back as float32), VIDEO_INFO_NAME and the model card `card`
    (README.md), atomically as one folder. Returns the folder."""
    from ...engine.checkpoint import atomic_folder

    folder = Path(folder)
    adapter = extract_adapter(model, torch.float16 if float16 else torch.float32)
    with atomic_folder(folder) as tmp:
        tmp = Path(tmp)
        adapter.save_pretrained(str(tmp), safe_serialization=True)
        description = {"kind": "video", "layout": "animatediff", "num_frames": int(num_frames), "base": base,
                       "adapter_dtype": "float16" if float16 else "float32",
                       "latents": "(B, C, F, H, W)", **({"training": info} if info else {})}
        (tmp / VIDEO_INFO_NAME).write_text(json.dumps(description, indent=2) + "\n")
        if card:
            (tmp / "README.md").write_text(card)
    return folder


def model_card(info: dict) -> str:
    from ...engine.cards import card_text

    cfg = info["config"]
    numbers = dict(info.get("heldout") or {})
    frames = cfg["n_frames"]
    load = (
        "```python\n"
        "from diffusers import AnimateDiffPipeline, MotionAdapter\n"
        "pipe = AnimateDiffPipeline.from_pretrained(stack, motion_adapter=MotionAdapter.from_pretrained(folder))\n"
        "\n"
        "from fourdistill.teachers import load_teacher            # the same, with DPM-Solver and predict()\n"
        "teacher = load_teacher(\"video\", folder)                  # or a real adapter / Zeroscope folder\n"
        f"out = teacher.predict(latents, t, text_states)          # latents (B, 4, {frames}, 16, 16)\n"
        "```"
    )
    return card_text(
        "fourdistill video teacher (AnimateDiff layout)",
        "A motion adapter in AnimateDiff's layout (Guo et al. 2024): diffusers' MotionAdapter, a temporal transformer "
        "after every spatial block of the embedded image stack's U-Net, attending over the frames of a clip at each "
        "pixel. The image U-Net stays frozen; only the motion modules were trained, on clips of world scenes (one "
        "camera over the scene's time) with their captions. It shares the stack's VAE, text encoder, tokenizer and "
        "noise schedule (loaded from the base stack).",
        command=info.get("command"),
        default_command="fourdistill teachers train --config configs/teachers/video.yaml",
        training=[
            f"data: world seeds {cfg['data']['first_seed']}..{cfg['data']['first_seed'] + cfg['data']['n_scenes'] - 1}, "
            f"{info['training_sets']} clips of {frames} frames (one camera, frame times t0 + k / {frames}); EVAL_SEEDS never trained on",
            f"{info['steps']} steps of batch {cfg['batch']} clips, AdamW lr {cfg['lr']} ({cfg['warmup_steps']} warmup, "
            f"{cfg['cooldown_steps']} cooldown), text dropout {cfg['text_dropout']}; only the motion modules train "
            f"({info['trainable_parameters']:,} parameters), the image U-Net is frozen",
            f"final training loss (mean of the last 50 steps): {info['final_loss']:.4f}" if info.get("final_loss") is not None else "no steps",
            f"motion adapter stored in {'float16 (loaded as float32)' if cfg['store_float16'] else 'float32'}",
            f"seed {cfg['seed']}; rendering and encoding {info['render_s'] / 60:.1f} min",
        ],
        steps=info["steps"],
        wall_s=info["wall_s"],
        threads=cfg.get("threads"),
        numbers=numbers,
        sections={"Loading": load},
        config=cfg,
    )
