"""Training and sampling the multi-view teacher (the `TeacherKind` of teachers.finetune).

MVDream (Shi et al. 2024) fine-tunes the whole SD 2.1 U-Net, with the new camera MLP, on
4-view renders of 3D assets at one elevation, 90 degrees apart; here the U-Net starts from the
embedded image stack and learns from K-view sets of world scenes at one time
(teachers.data.render_world_set mode "views"), with their captions.

Its held-out scores are evaluate.teachers.evaluate_multiview's (the trainer is handed that
scorer by the command, as evaluation sits on a higher floor).
"""

from __future__ import annotations

import numpy as np
import torch

from .model import multiview_unet, predict_views


class MultiViewKind:
    """The multi-view TeacherKind (see teachers.finetune)."""

    name = "multiview"
    mode = "views"

    def build(self, parts, cfg):
        return multiview_unet(parts.unet, cfg.n_views)

    def trainable(self, model):
        return [p for p in model.parameters()]  # MVDream fine-tunes the whole U-Net

    def predict(self, model, noisy, timesteps, text_states, batch):
        return predict_views(model, noisy, timesteps, text_states, batch["cameras"])

    def save(self, model, parts, folder, info):
        from .load import save_multiview_teacher

        cfg = info["config"]
        return save_multiview_teacher(model, folder, cfg["base"], cfg["n_views"], info, float16=cfg["store_float16"],
                                      card=model_card(info))


MULTIVIEW = MultiViewKind()


def sample_views(teacher, captions, cameras, steps=None, guidance=None, guidance_rescale=None, seed: int = 0) -> torch.Tensor:
    """(B, V, H, W, 3) images for B captions at cameras (B, V, 4, 4)."""
    from ...diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from ..sampling import sample_sets

    cameras = torch.as_tensor(np.asarray(cameras), dtype=torch.float32)

    def predict(x, t, text, rows):
        return teacher.predict(x, t, text, cameras[rows.cpu()])

    return sample_sets(teacher.parts, predict, list(captions), cameras.shape[1], steps or DEFAULT_STEPS,
                       DEFAULT_GUIDANCE if guidance is None else guidance, guidance_rescale, seed)


def model_card(info: dict) -> str:
    from ...engine.cards import card_text

    cfg = info["config"]
    numbers = dict(info.get("heldout") or {})
    load = (
        "```python\n"
        "from fourdistill.teachers import load_teacher\n"
        "teacher = load_teacher(\"multiview\", folder)   # or an MVDream sd-v2.1-base-4view.pt with base=SD 2.1\n"
        "out = teacher.predict(latents, t, text_states, cameras)   # (B, 4, 4, 16, 16), cameras (B, 4, 4, 4)\n"
        "```"
    )
    return card_text(
        "fourdistill multi-view teacher (MVDream layout)",
        "A tiny multi-view diffusion model in MVDream's layout (Shi et al. 2024): diffusers' UNet2DConditionModel with "
        "a projection camera embedding (16 inputs: the camera-to-world matrix, translation at unit length) added to the "
        "timestep embedding, and self-attention shared by the views. Fine-tuned from the embedded image stack's U-Net on "
        "K-view sets of world scenes; it shares the stack's VAE, text encoder and tokenizer (loaded from the base stack).",
        command=info.get("command"),
        default_command="fourdistill teachers train --config configs/teachers/multiview.yaml",
        training=[
            f"data: world seeds {cfg['data']['first_seed']}..{cfg['data']['first_seed'] + cfg['data']['n_scenes'] - 1}, "
            f"{info['training_sets']} sets of {cfg['n_views']} views (one time, one elevation, azimuths 90 degrees apart from a random offset); "
            "EVAL_SEEDS never trained on",
            f"{info['steps']} steps of batch {cfg['batch']} sets, AdamW lr {cfg['lr']} ({cfg['warmup_steps']} warmup, "
            f"{cfg['cooldown_steps']} cooldown), text dropout {cfg['text_dropout']}; the whole U-Net trains ({info['trainable_parameters']:,} parameters)",
            f"final training loss (mean of the last 50 steps): {info['final_loss']:.4f}" if info.get("final_loss") is not None else "no steps",
            f"U-Net stored in {'float16 (loaded as float32)' if cfg['store_float16'] else 'float32'}",
            f"seed {cfg['seed']}; rendering and encoding {info['render_s'] / 60:.1f} min",
        ],
        steps=info["steps"],
        wall_s=info["wall_s"],
        threads=cfg.get("threads"),
        numbers=numbers,
        sections={
            "Scoring": "Held-out EVAL_SEEDS captions, 4 cameras 90 degrees apart (random offset and elevation), DPM-Solver "
                       "30 steps, guidance 5, rescale 0.7. view_order_accuracy: the reader reads each next view 90 +- 15 degrees "
                       "further round (goal >= 0.8); objects_every_view: the judge reads the caption's objects in all 4 views "
                       "(goal >= 0.6); objects_per_view_exact: per view (the image stack's text-to-image score is 0.66). "
                       "truth/...: the same scores on the world's own renders at those cameras (this reader's and judge's ceiling). "
                       "Measured by the training run (`eval_scenes`) or `fourdistill teachers sample --kind multiview --evaluate`.",
            "Loading": load,
        },
        config=cfg,
    )
