"""How good a stack is, on held-out world seeds (EVAL_SEEDS).

- text-to-image: images generated from held-out captions, scored by the world's judge
  (attribute accuracy: every object of the caption read in the right colour);
- image prompt: generating from a held-out reference render plus its caption should give the
  reference back (PSNR against it, 64x64).

Generation uses the shipped sampler: the stack's DPM-Solver multistep scheduler,
fourdistill.diffusion.DEFAULT_STEPS steps at guidance DEFAULT_GUIDANCE. `write_sample_grid` is
what stack training draws its progress samples with (teachers.image.train.train's sample_grid).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..diffusion.guidance import resolve_guidance_rescale
from ..diffusion.schedule import predicted_clean_latents
from ..io import image_grid, save_image
from ..teachers.image.ip_adapter import encode_image_prompts, per_prompt_image_embeds
from ..teachers.image.train import stack_pipeline
from ..world import DEFAULT_ORBIT, EVAL_SEEDS, TRAIN_SEEDS, make_scene, object_mask, render_view
from .judge import attribute_accuracy, load_judge
from .metrics import mse_numpy, psnr_from_mse, psnr_numpy


REGIONS = ("sky", "ground", "objects")


@dataclass
class HeldOut:
    """Held-out references: scenes (S,), rgb (S, H, W, 3) float32 in [0, 1], captions (S,),
    regions (S, H, W) uint8: what each pixel shows, an index into REGIONS."""

    scenes: list
    rgb: np.ndarray
    captions: list[str]
    regions: np.ndarray


def held_out_references(n: int, resolution: int = 64, seed: int = 0, world=None) -> HeldOut:
    """The first `n` EVAL_SEEDS scenes, one render each at a seeded DEFAULT_ORBIT camera and time.
    `world`: the WorldConfig the scenes are drawn from (None: the default)."""
    if n > len(EVAL_SEEDS):
        raise ValueError(f"at most {len(EVAL_SEEDS)} held-out scenes, asked for {n}")
    rng = np.random.default_rng([seed, 0xE7A1])
    scenes, rgb, regions = [], [], []
    for s in list(EVAL_SEEDS)[:n]:
        scene = make_scene(s, world)
        cam = DEFAULT_ORBIT.sample(rng, resolution, resolution)
        t = float(rng.uniform(0, 1))
        view = render_view(scene, cam, t)
        rgb.append(view["rgb"])
        regions.append(_regions(scene, cam, t, view["depth"]))
        scenes.append(scene)
    return HeldOut(scenes, np.stack(rgb).astype(np.float32), [s.caption for s in scenes], np.stack(regions))


def _regions(scene, camera, time01: float, depth: np.ndarray) -> np.ndarray:
    """Per pixel of a view with `depth` (H, W): 0 sky, 1 ground, 2 an object (nearer than the
    ground seen without objects)."""
    out = np.zeros(depth.shape, dtype=np.uint8)
    out[np.isfinite(depth)] = 1
    out[object_mask(scene, [camera], [time01], depth[None])[0]] = 2
    return out


def training_mean_image(resolution: int = 64, n: int = 256, seed: int = 0, world=None) -> np.ndarray:
    """The mean of `n` renders of training scenes at DEFAULT_ORBIT cameras and uniform times,
    (H, W, 3): the best image a generator that ignores its prompts could output, in PSNR."""
    rng = np.random.default_rng([seed, 0x3EA7])
    total = np.zeros((resolution, resolution, 3), dtype=np.float64)
    for s in list(TRAIN_SEEDS)[:n]:
        cam = DEFAULT_ORBIT.sample(rng, resolution, resolution)
        total += render_view(make_scene(s, world), cam, float(rng.uniform(0, 1)))["rgb"]
    return (total / n).astype(np.float32)


def low_pass(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) images averaged down to size x size and bilinearly resized back."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = F.interpolate(F.adaptive_avg_pool2d(x, size), size=images.shape[1:3], mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


def generate(
    pipe,
    captions: list[str],
    references: np.ndarray | None,
    ip_scale: float = 1.0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    batch: int = 16,
    guidance_rescale: float | None = None,
) -> np.ndarray:
    """Generate one image per caption, with reference renders (N, H, W, 3) in [0, 1] as image
    prompts. references None or ip_scale 0: text only (the IP-Adapter's contribution is scaled
    to zero; a mid-grey image is passed because an installed IP-Adapter needs one).
    guidance_rescale: None takes the stack's default (diffusion.guidance.default_guidance_rescale: 0.7 for a
    zero-terminal-SNR schedule, else 0).
    Returns (N, H, W, 3) float32 in [0, 1]. Each caption gets its own reference
    (per_prompt_image_embeds: the pipeline's own IP-Adapter input would give every caption of a
    batch all of the batch's references)."""
    guidance_rescale = resolve_guidance_rescale(pipe.scheduler, guidance_rescale)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if references is None:
        references = np.full((len(captions), size, size, 3), 0.5, dtype=np.float32)
        ip_scale = 0.0
    pipe.set_ip_adapter_scale(ip_scale)
    out = []
    for i in range(0, len(captions), batch):
        refs = [Image.fromarray((np.clip(r, 0, 1) * 255 + 0.5).astype(np.uint8)) for r in references[i : i + batch]]
        embeds, negative = encode_image_prompts(pipe, refs)
        with per_prompt_image_embeds(pipe.unet, torch.cat([negative, embeds]).unsqueeze(1)):
            images = pipe(
                list(captions[i : i + batch]),
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_rescale=guidance_rescale,
                height=size,
                width=size,
                generator=torch.Generator().manual_seed(seed + i),
                output_type="np",
            ).images
        out.append(images.astype(np.float32))
    pipe.set_ip_adapter_scale(1.0)
    return np.concatenate(out)


def write_sample_grid(stack, path: Path, seed: int = 0, n: int = 4, steps: int = 20, world=None) -> None:
    """PNG grid of an in-memory Stack (teachers.image.stack.Stack), one column per held-out scene:
    reference render / text + image prompt / text only."""
    for m in (stack.unet, stack.text_encoder, stack.image_encoder):
        m.eval()
    pipe = stack_pipeline(stack)
    ref = held_out_references(n, stack.config.resolution, seed, world)
    with_image = generate(pipe, ref.captions, ref.rgb, 1.0, steps=steps, seed=seed)
    text_only = generate(pipe, ref.captions, None, 0.0, steps=steps, seed=seed)
    save_image(path, image_grid(np.concatenate([ref.rgb, with_image, text_only]), rows=3))


@dataclass
class StackQuality:
    text_to_image_accuracy: float | None  # judge's exact attribute accuracy (None: no judge)
    text_to_image_per_shape: float | None
    image_prompt_psnr_db: float
    reference_vae_psnr_db: float  # the VAE's own reconstruction PSNR on the references (a ceiling)
    # the image-prompt error split by what the reference shows: share of pixels, PSNR there
    image_prompt_by_region: dict
    # yardsticks for the image-prompt PSNR: the mean training render (ignores the prompt), and
    # the reference itself averaged down to 16x16 (only its layout kept)
    mean_image_psnr_db: float
    reference_16px_psnr_db: float
    n_scenes: int
    steps: int
    guidance: float
    # what each prompt tells the U-Net where sampling starts: PSNR of its clean-image prediction
    # from pure noise, per prompt ("text+image", "image", "text", "none"); see first_step_psnr
    first_step_psnr_db: dict | None = None
    # the judge's exact accuracy on the VAE's reconstructions of the references: the most a
    # text-to-image sample decoded by this VAE can score (None: no judge)
    reference_vae_text_to_image_accuracy: float | None = None
    # how far two samples of the same text + image prompt (other starting noise) lie from each
    # other: PSNR of half their squared difference, the sampler's own spread per pixel
    image_prompt_spread_db: float | None = None
    # what the samples would score if they kept the first step's estimate and differed from it
    # only by their spread: for a model that samples its own posterior, the expected squared error
    # vs the reference is the first step's plus the spread (docs/results/2026-11-stack-experiments.md). Far above
    # image_prompt_psnr_db: the sampler drifts away from its first step the same way every time
    image_prompt_consistent_db: float | None = None
    # the judge's exact accuracy on the image-prompted samples against the reference's objects:
    # does the image prompt carry what the reference shows (shapes and colours), whatever the
    # pixels' layout? What IP-Adapter is for; PSNR asks for the layout too (None: no judge)
    image_prompt_identity: float | None = None
    # the guided prediction rescaled towards the conditional one's spread (diffusers'
    # guidance_rescale; 0: plain classifier-free guidance)
    guidance_rescale: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


PROMPT_SETS = ("text+image", "image", "text", "none")


def first_step_images(pipe, ref: HeldOut) -> dict:
    """The U-Net's clean-image prediction from pure noise at the last training timestep (where
    sampling starts), decoded by the VAE, with each prompt combination: {"text+image", "image",
    "text", "none"} -> (N, H, W, 3) in [0, 1]. A dropped text is the empty prompt and a dropped
    image the all-zero pixel tensor, as in training."""
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    n = len(ref.captions)
    t = torch.full((n,), sched.config.num_train_timesteps - 1)
    with torch.no_grad():
        # the pipeline's own encodings: captions and the empty prompt; the reference through its
        # feature extractor and the all-zero pixel tensor
        text, empty = pipe.encode_prompt(list(ref.captions), pipe.device, 1, True, [""] * n)
        image, blank = encode_image_prompts(pipe, list((np.clip(ref.rgb, 0, 1) * 255 + 0.5).astype(np.uint8)))
        latent_shape = (n, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0))
        out = {}
        for name, te, ie in zip(PROMPT_SETS, (text, empty, text, empty), (image, image, blank, blank)):
            pred = pipe.unet(noise, t, encoder_hidden_states=te, added_cond_kwargs={"image_embeds": [ie.unsqueeze(1)]}).sample
            x0 = predicted_clean_latents(sched, noise, pred, t)
            decoded = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample
            out[name] = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return out


def first_step_psnr(pipe, ref: HeldOut, images: dict | None = None) -> dict:
    """PSNR vs the reference of `first_step_images` (computed if not given), per prompt
    combination -> dB. This prediction is the conditional mean of the images that fit the
    prompts, so it shows how much of the reference's layout the prompts carry, before any
    sampling noise: an image prompt that pinned the reference down would score near the VAE's
    ceiling, one that says nothing near the mean training render."""
    images = images if images is not None else first_step_images(pipe, ref)
    return {name: round(float(psnr_numpy(x, ref.rgb).mean()), 2) for name, x in images.items()}


def evaluate_stack(pipe, n: int = 64, seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, judge=None, samples_path=None, world=None,
                   guidance_rescale: float | None = None) -> StackQuality:
    """Both numbers on `n` held-out scenes. `judge`: a Judge, or None to load the shipped one
    (skipped with None in the result when no judge is shipped). `world`: the WorldConfig the
    held-out scenes (and the mean-image yardstick) are drawn from; None: the default.
    guidance_rescale: None takes the stack's default (see `generate`)."""
    guidance_rescale = resolve_guidance_rescale(pipe.scheduler, guidance_rescale)
    ref = held_out_references(n, pipe.unet.config.sample_size * pipe.vae_scale_factor, seed, world)
    common = dict(steps=steps, guidance=guidance, guidance_rescale=guidance_rescale)
    with_image = generate(pipe, ref.captions, ref.rgb, 1.0, seed=seed, **common)
    # the same prompts from other starting noise (generate seeds each batch of 16 with seed + i)
    with_image_again = generate(pipe, ref.captions, ref.rgb, 1.0, seed=seed + 1, **common)
    text_only = generate(pipe, ref.captions, None, 0.0, seed=seed, **common)
    with torch.no_grad():
        x = torch.from_numpy(ref.rgb).permute(0, 3, 1, 2) * 2 - 1
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    recon = ((recon.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    accuracy = per_shape = ceiling = identity = None
    try:
        judge = judge or load_judge()
    except (ImportError, FileNotFoundError):
        judge = None
    if judge is not None:
        score = attribute_accuracy(text_only, ref.scenes, judge)
        accuracy, per_shape = score.exact, score.per_shape
        ceiling = attribute_accuracy(recon, ref.scenes, judge).exact
        identity = attribute_accuracy(with_image, ref.scenes, judge).exact
    if samples_path is not None:
        k = min(8, n)
        rows = np.concatenate([ref.rgb[:k], with_image[:k], text_only[:k]])
        save_image(samples_path, image_grid(rows, rows=3))
    err = ((with_image.astype(np.float64) - ref.rgb) ** 2).mean(-1)
    by_region = {}
    for k, name in enumerate(REGIONS):
        sel = ref.regions == k
        if sel.any():
            by_region[name] = {"pixels": round(float(sel.mean()), 4), "psnr_db": round(float(psnr_from_mse(err[sel].mean(), min_mse=1e-12)), 2)}
    mean_image = training_mean_image(ref.rgb.shape[1], world=world)
    first = first_step_images(pipe, ref)
    spread = mse_numpy(with_image, with_image_again) / 2
    return StackQuality(
        text_to_image_accuracy=accuracy,
        text_to_image_per_shape=per_shape,
        image_prompt_psnr_db=float(psnr_numpy(with_image, ref.rgb).mean()),
        reference_vae_psnr_db=float(psnr_numpy(recon, ref.rgb).mean()),
        image_prompt_by_region=by_region,
        mean_image_psnr_db=float(psnr_numpy(np.broadcast_to(mean_image, ref.rgb.shape), ref.rgb).mean()),
        reference_16px_psnr_db=float(psnr_numpy(low_pass(ref.rgb, 16), ref.rgb).mean()),
        n_scenes=n,
        steps=steps,
        guidance=guidance,
        first_step_psnr_db=first_step_psnr(pipe, ref, first),
        reference_vae_text_to_image_accuracy=ceiling,
        image_prompt_spread_db=round(float(psnr_from_mse(spread, min_mse=1e-12).mean()), 2),
        image_prompt_consistent_db=round(float(psnr_from_mse(mse_numpy(first["text+image"], ref.rgb) + spread, min_mse=1e-12).mean()), 2),
        image_prompt_identity=identity,
        guidance_rescale=guidance_rescale,
    )
