"""The image teacher's model card: README.md in a stack folder, through engine.cards.

The trainer writes one into every finished stack (its parts and how it was trained); the shipped
stack's card adds the quality on held-out world seeds that `fourdistill teachers sample
--evaluate` measures (fourdistill.evaluate.stack.StackQuality), and notes.
"""

from __future__ import annotations

from pathlib import Path

from ...engine.cards import card_text, write_card

TITLE = "fourdistill embedded stack (tiny Stable Diffusion layout + IP-Adapter-Plus)"
INTRO = """A tiny text-to-image diffusion model in the Stable Diffusion 1.x folder layout, with an
IP-Adapter-Plus in the h94/IP-Adapter file layout, trained on renders of the project's
procedural 4D world. It knows the world's objects from text and from a reference image; it
was never shown a time or view displacement (the Time and View Mappers learn those).

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(folder)
pipe.load_ip_adapter(folder, subfolder="models", weight_name="ip-adapter-plus_tiny.safetensors")
```
or `fourdistill.teachers.image.load.load_stack()` (the same two calls, DPM-Solver multistep)."""
PHASE_NAMES = {"vae": "VAE", "decoder": "decoder", "unet": "U-Net"}


def _fmt(x, digits: int = 3) -> str:
    return "not measured" if x is None else f"{x:.{digits}f}"


def _noise_text(stack: dict) -> str:
    noise = stack.get("noise", {})  # stacks trained before the option: epsilon
    text = ", v prediction" if noise.get("prediction_type") == "v_prediction" else ", epsilon prediction"
    if noise.get("zero_terminal_snr"):
        text += ", rescaled to zero terminal SNR, trailing timesteps"
    return text


def model_card(summary: dict, quality: dict | None, command: str, steps_done: dict, machine: str, notes: list[str] | None = None,
               decoder: dict | None = None, vae_source: str | None = None) -> str:
    """Markdown text. summary: the run's train_summary.json (config, wall_s, phase_wall_s);
    quality: a StackQuality dict, or None (a card without the held-out numbers, as the trainer
    writes it); steps_done: {"vae": n, "unet": n} actually trained; decoder: a later decoder
    fine-tune of that stack ({"steps", "batch", "lr", "l1_weight", "wall_s"}), if any;
    vae_source: for a run that took its VAE from another stack (vae_from), how that VAE was
    trained."""
    cfg = summary["config"]
    stack = cfg["stack"]
    data = cfg["data"]
    phase_wall = summary.get("phase_wall_s", {})
    last_seed = data["first_seed"] + data["n_scenes"] - 1
    cooldown = f" (constant after {cfg['warmup_steps']} warmup steps, then linear decay to zero over the last {cfg['cooldown_steps']})" if cfg.get("cooldown_steps") else ""
    l1 = f" + {cfg['vae_l1_weight']} L1" if cfg.get("vae_l1_weight") else ""
    training = [
        f"data: world seeds {data['first_seed']}..{last_seed} ({data['n_scenes']} scenes x {data['views_per_scene']} renders at DEFAULT_ORBIT cameras and uniform times); the held-out EVAL_SEEDS (1000000..1000999) were never trained on",
        f"VAE: {steps_done['vae']} steps, batch {cfg['vae_batch']}, lr {cfg['vae_lr']}, MSE{l1} + {cfg['vae_kl_weight']} KL"
        if vae_source is None
        else f"VAE: taken unchanged from another stack (vae_from, no VAE phase in this run): {vae_source}",
        f"U-Net + text encoder + image encoder + IP-Adapter jointly: {steps_done['unet']} of {cfg['unet_steps']} planned steps, batch {cfg['batch']}, AdamW lr {cfg['lr']}{cooldown}, text dropout {cfg['text_dropout']}, image dropout {cfg['image_dropout']}, CLIP contrastive weight {cfg['contrastive_weight']}",
    ]
    if decoder:
        dec_l1 = f" + {decoder['l1_weight']} L1" if decoder.get("l1_weight") else ""
        training.append(
            f"VAE decoder fine-tune (encoder frozen, so the latents and the U-Net's work are unchanged): {decoder['steps']} steps, "
            f"batch {decoder['batch']}, lr {decoder['lr']}, MSE{dec_l1}, {decoder['wall_s'] / 60:.1f} min"
        )
    training.append(f"seed {cfg['seed']}; torch threads {cfg['threads']}")
    if phase_wall:
        training.append("wall time by phase: " + ", ".join(f"{PHASE_NAMES[k]} {v / 60:.1f} min" for k, v in phase_wall.items() if k in PHASE_NAMES))
    parts = "\n".join([
        f"- images {stack['resolution']}x{stack['resolution']}, latents 4x{stack['resolution'] // 4}x{stack['resolution'] // 4}",
        f"- text encoder: CLIPTextModel, width {stack['text']['hidden_size']}, {stack['text']['num_hidden_layers']} layers, context 77; tokenizer: CLIP BPE built offline from the world's captions and plain English words",
        f"- VAE: AutoencoderKL, channels {stack['vae']['block_out_channels']}",
        f"- U-Net: UNet2DConditionModel, channels {stack['unet']['block_out_channels']}, blocks {stack['unet']['down_block_types']}",
        f"- image encoder: CLIPVisionModelWithProjection, {stack['resolution']}px, patch {stack['image_encoder']['patch_size']}, width {stack['image_encoder']['hidden_size']}",
        f"- IP-Adapter-Plus: Resampler with {stack['ip_adapter']['num_tokens']} image tokens over the image encoder's penultimate hidden states",
        f"- scheduler: DPM-Solver multistep over SD's training schedule (DDPM 1000 steps, scaled_linear betas{_noise_text(stack)})",
    ])
    sections = {"Parts": parts}
    if quality is not None:
        heading, table = _quality_section(quality)
        sections[heading] = table
    if notes:
        sections["Notes"] = "\n".join(f"- {n}" for n in notes)
    return card_text(TITLE, INTRO, command=command, training=training, wall_s=summary.get("wall_s"), device=machine, threads=cfg["threads"], sections=sections)


def _quality_section(quality: dict) -> tuple[str, str]:
    """(heading, markdown) of the held-out quality numbers."""
    heading = (
        f"Quality on held-out world seeds ({quality['n_scenes']} scenes, DPM-Solver {quality['steps']} steps, guidance {quality['guidance']}"
        + (f", guidance rescale {quality['guidance_rescale']}" if quality.get("guidance_rescale") else "")
        + ")"
    )
    lines = [
        "| measure | value | goal |",
        "|---|---|---|",
        f"| text-to-image: judge attribute accuracy (exact) | {_fmt(quality['text_to_image_accuracy'])} | >= 0.8 |",
        f"| text-to-image: judge per-shape accuracy | {_fmt(quality['text_to_image_per_shape'])} | |",
        f"| text-to-image ceiling: judge exact accuracy on the VAE's reconstructions of the references | {_fmt(quality.get('reference_vae_text_to_image_accuracy'))} | |",
        f"| image prompt: PSNR of generation vs reference | {_fmt(quality['image_prompt_psnr_db'], 2)} dB | >= 20 dB |",
        *(
            [f"| image prompt: judge exact accuracy of the samples against the reference's objects | {_fmt(quality['image_prompt_identity'])} | |"]
            if quality.get("image_prompt_identity") is not None
            else []
        ),
        f"| VAE reconstruction PSNR of the references (ceiling) | {_fmt(quality['reference_vae_psnr_db'], 2)} dB | > 28 dB |",
    ]
    if quality.get("mean_image_psnr_db") is not None:
        lines += [
            f"| yardstick: the mean training render vs the reference (ignores every prompt) | {_fmt(quality['mean_image_psnr_db'], 2)} dB | |",
            f"| yardstick: the reference averaged down to 16x16 (its layout only) | {_fmt(quality['reference_16px_psnr_db'], 2)} dB | |",
        ]
    if quality.get("image_prompt_spread_db") is not None:
        lines += [
            f"| image prompt: spread of two samples of the same prompts (PSNR of half their squared difference) | {_fmt(quality['image_prompt_spread_db'], 2)} dB | |",
            f"| image prompt: a sampler true to its first step (first-step error + spread) | {_fmt(quality['image_prompt_consistent_db'], 2)} dB | |",
        ]
    first = quality.get("first_step_psnr_db") or {}
    if first:
        split = ", ".join(f"{name} {v:.2f} dB" for name, v in first.items())
        lines += ["", f"Clean-image prediction from pure noise (where sampling starts) vs the reference, by prompt: {split}."]
    regions = quality.get("image_prompt_by_region") or {}
    if regions:
        split = ", ".join(f"{name} {r['psnr_db']:.2f} dB on {100 * r['pixels']:.0f}% of pixels" for name, r in regions.items())
        lines += ["", f"Image-prompt PSNR by what the reference shows: {split}."]
    lines += ["", "Measured with `fourdistill teachers sample --evaluate --n 64 --out samples.png`."]
    return heading, "\n".join(lines)


def write_model_card(folder, text: str) -> Path:
    """README.md in `folder`, atomically (engine.cards.write_card)."""
    return write_card(folder, text)
