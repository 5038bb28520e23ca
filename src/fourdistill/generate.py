"""Generate with time and view control.

`ControlledPipeline` is a thin layer over diffusers' `StableDiffusionPipeline`, not a
`DiffusionPipeline` subclass. The user's pipeline (any SD-layout model, its scheduler, its
IP-Adapter, device, dtype and whatever else they loaded) keeps running its own sampling loop;
this layer supplies only what differs: a text condition per (denoising step, cross-attention
layer). So every scheduler and every improvement of the upstream loop works unchanged, and the
plain pipeline stays available for the comparison in `benchmarks/generate.py`.

How a call works:

1. The prompt gets the placeholders of the loaded mappers ("<time> <view> a red cube ...").
2. For every timestep the scheduler will visit, every layer and every image, the conditions
   are computed up front in ONE batched text-encoder pass (`MappedTextConditioner`, chunked
   only when the batch would exceed `max_rows` prompts), never per step.
3. A forward pre-hook on the U-Net looks the step's conditions up by the timestep value it is
   called with (never by counting calls) and passes them as
   `cross_attention_kwargs={"layer_conditions": ...}` to the layer-aware processors.
4. Classifier-free guidance: the unconditional half gets the negative prompt (default "") at
   every layer, and, as in the reference implementation (docs/method.md, 1.4), the same image tokens as the
   conditional half, so guidance acts on the text (time and view tokens, caption) only.

A control that is not asked for is the identity: time d = 0, no view change. A checkpoint with
both mappers always puts both tokens in the prompt (it was trained that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cameras import orbit_camera
from .diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from .diffusion.guidance import resolve_guidance_rescale
from .io import image_grid
from .mappers.checkpoint import LoadedMappers, load_mappers
from .teachers.image.ip_adapter import encode_image_prompts, per_prompt_image_embeds
from .teachers.image.load import load_stack
from .world import DEFAULT_ORBIT, make_scene, render_view

SHIPPED_MAPPERS = Path(__file__).resolve().parent / "assets" / "mappers"


@dataclass(frozen=True)
class ViewChange:
    """A camera change from the reference's camera.

    Spherical deltas about the object: azimuth and elevation in degrees, radius in world units;
    or a relative transform inverse(P_ref) @ P_tgt (4x4, camera-to-world, OpenGL axes) for View
    Mappers conditioned on the matrix.
    """

    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    radius: float = 0.0
    relative_pose: tuple | None = None

    @property
    def spherical(self) -> tuple[float, float, float]:
        return (float(self.azimuth_deg), float(self.elevation_deg), float(self.radius))

    def matrix(self) -> np.ndarray:
        if self.relative_pose is None:
            return np.eye(4, dtype=np.float32)
        m = np.asarray(self.relative_pose, dtype=np.float32)
        if m.shape != (4, 4):
            raise ValueError(f"ViewChange.relative_pose must be 4x4, got shape {m.shape}")
        return m

    @property
    def is_identity(self) -> bool:
        return self.spherical == (0.0, 0.0, 0.0) and (self.relative_pose is None or np.allclose(self.matrix(), np.eye(4)))


def _as_list(value, n: int | None, name: str) -> list:
    if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, ViewChange):
        items = list(value)
        if n is not None and len(items) not in (1, n):
            raise ValueError(f"{name}: {len(items)} values for {n} images")
        return items
    return [value]


def _broadcast(items: list, n: int) -> list:
    return items * n if len(items) == 1 else items


# What a reference file with an alpha channel is composited over: white, as the D-NeRF reader
# (fourdistill.sources) composites D-NeRF's RGBA frames by default.
REFERENCE_BACKGROUND = (1.0, 1.0, 1.0)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_alpha(image) -> bool:
    """Whether a PIL image carries transparency (an alpha channel or a transparent palette entry)."""
    return image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def reference_to_pil(image, size: tuple[int, int], resize: bool = False, where: str = "reference image"):
    """A reference image (PIL image, path, or (H, W, 3) array in [0, 1] or uint8) as an RGB PIL
    image of exactly `size` (width, height). Another size is an error unless `resize`.

    A file with transparency (every D-NeRF frame is RGBA) is composited over
    REFERENCE_BACKGROUND, as the D-NeRF reader does; an image passed in memory must already be
    RGB (convert it first, so nothing is guessed about alpha or palettes), and so must a file
    of another mode (grayscale, CMYK)."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference image not found")
        try:
            image = Image.open(path)
            image.load()
        except Exception as exc:  # PIL raises several types for unreadable files (a decompression bomb included)
            raise ValueError(f"{path}: cannot read the reference image ({' '.join(str(exc).split()) or type(exc).__name__})") from None
        if has_alpha(image):
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[..., 3:]
            rgb = rgba[..., :3] * alpha + np.asarray(REFERENCE_BACKGROUND, np.float32) * (1.0 - alpha)
            image = Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        where = str(path)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"{where}: an array reference must have shape (H, W, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            if arr.min() < 0.0 or arr.max() > 1.0:
                raise ValueError(f"{where}: a float array reference must lie in [0, 1], got {arr.min():.3f}..{arr.max():.3f}")
            arr = (arr * 255.0 + 0.5).astype(np.uint8)
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise TypeError(f"{where}: expected a PIL image, a path or an (H, W, 3) array, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"{where}: mode {image.mode!r}, expected 'RGB' (convert it, e.g. composite RGBA over a background, before passing it)")
    if image.size != tuple(size):
        if not resize:
            raise ValueError(
                f"{where}: size {image.size[0]}x{image.size[1]}, the model generates {size[0]}x{size[1]}; "
                "pass a reference of that size or ask to resize it (--resize)"
            )
        image = image.resize(tuple(size), Image.BICUBIC)
    return image


class ControlledPipeline:
    """Time and view control over a StableDiffusionPipeline with an IP-Adapter and loaded mappers.

    Build it with `ControlledPipeline.from_pretrained(model, mappers)` or wrap a pipeline you
    already have: `ControlledPipeline(pipe, mappers_folder)` (which calls `load_mappers`), or
    `ControlledPipeline(pipe, load_mappers(pipe, mappers_folder))`.

    mappers: a mapper checkpoint folder, or the `LoadedMappers` that `load_mappers` returned for
    this pipeline. conditioner: instead, a MappedTextConditioner whose layer processors are
    already installed on the U-Net (mappers in training, for validation grids). The pipeline
    keeps only what `load_mappers` gives it (attention processors, placeholder tokens); the
    conditioner and the checkpoint's config live here.
    """

    def __init__(self, pipe, mappers=None, max_rows: int = 2048, conditioner=None):
        self.pipe = pipe
        if conditioner is not None:
            self.conditioner, self.config = conditioner, {}
        else:
            if mappers is None:
                raise ValueError("no mappers: pass a mapper checkpoint folder, or what load_mappers(pipe, folder) returned")
            loaded = mappers if isinstance(mappers, LoadedMappers) else load_mappers(pipe, mappers)
            self.conditioner, self.config = loaded.conditioner, loaded.config
        self.max_rows = int(max_rows)

    @classmethod
    def from_pretrained(cls, model: str | None = None, mappers=None, device="cpu", dtype=None) -> "ControlledPipeline":
        """The stack (embedded by default, a folder or a hub id) with its IP-Adapter, and mappers
        (the shipped ones by default)."""
        pipe = load_stack(model, ip_adapter=True, device=device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, SHIPPED_MAPPERS if mappers is None else mappers)

    # ------------------------------------------------------------------ properties
    @property
    def has_time(self) -> bool:
        return self.conditioner.time_mapper is not None

    @property
    def has_view(self) -> bool:
        return self.conditioner.view_mapper is not None

    @property
    def size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return (side, side)

    @property
    def trained_ip_scale(self) -> float:
        """The IP-Adapter scale the mappers were distilled with (0.5 unless the run said otherwise)."""
        return float(self.config.get("distill_config", {}).get("ip_adapter_scale", 0.5))

    # ------------------------------------------------------------------ conditions
    def _controls(self, n: int, time, view) -> tuple[np.ndarray, list[ViewChange]]:
        """Check and broadcast the controls to n images."""
        if time is None and view is None:
            raise ValueError("both controls are off: give a time displacement d, a view change, or both (for plain generation use the diffusers pipeline)")
        if time is not None and not self.has_time:
            raise ValueError("these mappers have no Time Mapper (they were distilled in view mode): time control is not available")
        if view is not None and not self.has_view:
            raise ValueError("these mappers have no View Mapper (they were distilled in time mode): view control is not available")
        times = np.asarray(_broadcast(_as_list(0.0 if time is None else time, n, "time"), n), dtype=np.float64)
        if not np.all(np.isfinite(times)) or np.any(np.abs(times) > 1.0):
            bad = times[~np.isfinite(times) | (np.abs(times) > 1.0)][0]
            raise ValueError(f"time displacement d must lie in [-1, 1] (d = t_target - t_reference, times normalised to [0, 1]), got {bad}")
        views = _broadcast(_as_list(ViewChange() if view is None else view, n, "view"), n)
        for v in views:
            if not isinstance(v, ViewChange):
                raise TypeError(f"view: expected ViewChange values, got {type(v).__name__}")
            if self.has_view and self.conditioner.view_mapper.config.view_condition == "spherical" and v.relative_pose is not None:
                raise ValueError("this View Mapper is conditioned on spherical deltas (azimuth, elevation, radius), not on a relative transform")
        return times, views

    def conditions(self, prompts: list[str], timesteps, times: np.ndarray, views: list[ViewChange], truncation: int | None = None, textual_bypass: bool = True):
        """Per-layer conditions for every (timestep, image): (S, L, B, 77, C), in one batched
        text-encoder pass (chunked by `max_rows` prompts only when the batch is larger).
        textual_bypass: False drops the textual bypass (alpha 0), as in `MappedTextConditioner`."""
        cond = self.conditioner
        device = next(self.pipe.text_encoder.parameters()).device
        timesteps = torch.as_tensor(timesteps).reshape(-1).to(device)
        s, b, n_l = len(timesteps), len(prompts), cond.n_layers
        ids = cond.tokenize([cond.prompt(p) for p in prompts], device=device)  # (B, 77)
        rows_ids = ids.repeat(s, 1)  # (S*B, 77), step-major
        rows_t = timesteps.repeat_interleave(b)
        time_c = view_c = None
        if self.has_time:
            time_c = cond.time_mapper.condition(torch.as_tensor(times, dtype=torch.float32, device=device)).repeat(s, 1)
        if self.has_view:
            sph = torch.tensor([v.spherical for v in views], dtype=torch.float32, device=device)
            rel = torch.as_tensor(np.stack([v.matrix() for v in views]), device=device)
            view_c = cond.view_mapper.condition(sph, rel).repeat(s, 1)
        chunk = max(1, self.max_rows // n_l)
        with torch.no_grad():
            parts = [
                cond(
                    rows_ids[i : i + chunk],
                    rows_t[i : i + chunk],
                    None if time_c is None else time_c[i : i + chunk],
                    None if view_c is None else view_c[i : i + chunk],
                    truncation=truncation,
                    textual_bypass=textual_bypass,
                )
                for i in range(0, s * b, chunk)
            ]
        out = torch.cat(parts, dim=1)  # (L, S*B, 77, C)
        return out.reshape(n_l, s, b, *out.shape[2:]).permute(1, 0, 2, 3, 4)

    def _plain_embeddings(self, prompts: list[str]):
        tok = self.pipe.tokenizer
        device = next(self.pipe.text_encoder.parameters()).device
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return self.pipe.text_encoder(ids.to(device)).last_hidden_state

    def _image_embeds(self, references: list, guided: bool, image_in_uncond: bool):
        """IP-Adapter inputs for the U-Net, one reference per image: [(2B or B, 1, ...)] with the
        negative half first (see per_prompt_image_embeds)."""
        embeds, negative = encode_image_prompts(self.pipe, references)
        embeds = embeds.unsqueeze(1)
        if not guided:
            return [embeds]
        negative = embeds if image_in_uncond else negative.unsqueeze(1)
        return [torch.cat([negative, embeds])]

    # ------------------------------------------------------------------ generation
    def __call__(
        self,
        prompt,
        image=None,
        time=None,
        view=None,
        guidance_scale: float = DEFAULT_GUIDANCE,
        num_inference_steps: int = DEFAULT_STEPS,
        seed: int = 0,
        ip_adapter_scale: float | None = None,
        negative_prompt: str = "",
        shared_noise: bool = True,
        resize: bool = False,
        truncation: int | None = None,
        image_in_uncond: bool = True,
        mapped: bool = True,
        guidance_rescale: float | None = None,
        textual_bypass: bool = True,
    ) -> np.ndarray:
        """Images (N, H, W, 3) float32 in [0, 1].

        prompt: a caption (without placeholders) or one per image. image: the reference (PIL,
        path or array), one for all images or one per image; None generates from text alone
        (IP-Adapter scale 0). time: d in [-1, 1], or one per image. view: a ViewChange, or one
        per image. N is the longest of prompt, image, time and view; the others broadcast.
        shared_noise: every image starts from the same noise (sweeps change only the control).
        ip_adapter_scale: default, the scale the mappers were distilled with.
        truncation: nested-dropout truncation of the mapper outputs (None: all units).
        mapped: False generates without the mappers (the plain caption, time and view ignored)
            with everything else identical: noise, guidance, image tokens. See `plain`.
        guidance_rescale: diffusers' rescale of the guided prediction (Lin et al.); None: the
            stack's default, 0.7 for a zero-terminal-SNR stack, else 0.
        textual_bypass: False generates with the mappers' textual bypass off (alpha 0 for both tokens),
            the `no_bypass` ablation of `fourdistill evaluate`.
        """
        pipe = self.pipe
        prompts = _as_list(prompt, None, "prompt")
        if image is None:
            images = None
        elif isinstance(image, np.ndarray):
            images = list(image) if image.ndim == 4 else [image]
        else:
            images = _as_list(image, None, "image")
        lengths = {"prompt": len(prompts), "image": len(images) if images else 1}
        for name, control in (("time", time), ("view", view)):
            if isinstance(control, (list, tuple, np.ndarray)):
                lengths[name] = len(control)
        n = max(lengths.values())
        for name, length in lengths.items():
            if length not in (1, n):
                raise ValueError(f"{name}: {length} values for {n} images")
        prompts = _broadcast(prompts, n)
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompt: expected strings, got {type(p).__name__}")
        if mapped:
            times, views = self._controls(n, time, view)
        if not 1 <= int(num_inference_steps) <= 1000:
            raise ValueError(f"num_inference_steps must lie in 1..1000, got {num_inference_steps}")
        guidance_rescale = resolve_guidance_rescale(pipe.scheduler, guidance_rescale)
        width, height = self.size
        scale = self.trained_ip_scale if ip_adapter_scale is None else float(ip_adapter_scale)
        if images is None:
            references = [Image.new("RGB", (width, height), (127, 127, 127))] * n
            scale = 0.0
        else:
            pils = [reference_to_pil(im, (width, height), resize=resize) for im in images]
            references = _broadcast(pils, n)
        guided = guidance_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        device = next(pipe.unet.parameters()).device

        # everything the loop needs, once
        negative = self._plain_embeddings([negative_prompt] * n)  # (B, 77, C)
        image_embeds = self._image_embeds(references, guided, image_in_uncond)
        if mapped:
            pipe.scheduler.set_timesteps(int(num_inference_steps), device=device)
            timesteps = pipe.scheduler.timesteps.unique()
            table = self.conditions(prompts, timesteps, times, views, truncation=truncation, textual_bypass=textual_bypass)  # (S, L, B, 77, C)
            lookup = {int(t): k for k, t in enumerate(timesteps.tolist())}
            negative_layers = negative[None].expand(table.shape[1], *negative.shape).to(table.dtype)
            prompt_embeds = table[0, 0].to(negative.dtype)
        else:
            prompt_embeds = self._plain_embeddings(prompts)

        def layer_conditions(t: int):
            k = lookup.get(int(t))
            if k is None:  # a scheduler visiting a timestep not announced by set_timesteps
                extra = self.conditions(prompts, torch.tensor([int(t)]), times, views, truncation=truncation, textual_bypass=textual_bypass)[0]
                return extra
            return table[k]

        def pre_hook(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            t = int(t.reshape(-1)[0]) if torch.is_tensor(t) else int(t)
            conds = layer_conditions(t)
            if sample.shape[0] == 2 * n:
                conds = torch.cat([negative_layers, conds], dim=1)
            kwargs = dict(kwargs)
            kwargs["cross_attention_kwargs"] = {**(kwargs.get("cross_attention_kwargs") or {}), "layer_conditions": conds.to(sample.dtype)}
            return args, kwargs

        if shared_noise:
            shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).repeat(n, 1, 1, 1)
            latents, generator = noise.to(device=device, dtype=pipe.unet.dtype), None
        else:
            latents, generator = None, torch.Generator().manual_seed(int(seed))
        pipe.set_ip_adapter_scale(scale)
        handle = pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True) if mapped else None  # before any hook of the user
        try:
            with per_prompt_image_embeds(pipe.unet, image_embeds[0]):
                out = pipe(
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative,
                    num_inference_steps=int(num_inference_steps),
                    guidance_scale=guidance_scale,
                    guidance_rescale=guidance_rescale,
                    height=height,
                    width=width,
                    latents=latents,
                    generator=generator,
                    output_type="np",
                ).images
        finally:
            if handle is not None:
                handle.remove()
        return np.asarray(out, dtype=np.float32)

    def plain(self, prompt, image=None, **kwargs) -> np.ndarray:
        """The same generation without the mappers: caption and image prompt only (the baseline
        "IP-Adapter alone"), with the same noise, guidance and image tokens as `__call__`."""
        kwargs.pop("time", None)
        kwargs.pop("view", None)
        return self(prompt, image, mapped=False, **kwargs)

    # ------------------------------------------------------------------ sweeps
    def time_sweep(self, prompt, image, deltas=None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Images for d in `deltas` (default 9 values from -1 to 1) at the reference's view."""
        deltas = np.linspace(-1.0, 1.0, 9) if deltas is None else np.asarray(deltas, dtype=np.float64)
        return deltas, self(prompt, image, time=list(deltas), view=ViewChange() if self.has_view else None, **kwargs)

    def view_orbit(self, prompt, image, azimuths=None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Images for azimuth changes (default 9 values from -90 to 90 degrees) at d = 0."""
        azimuths = np.linspace(-90.0, 90.0, 9) if azimuths is None else np.asarray(azimuths, dtype=np.float64)
        views = [ViewChange(azimuth_deg=float(a)) for a in azimuths]
        return azimuths, self(prompt, image, time=0.0 if self.has_time else None, view=views, **kwargs)

    def time_view_grid(self, prompt, image, deltas=None, azimuths=None, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A (len(deltas), len(azimuths)) grid: rows are time displacements, columns view changes."""
        if not (self.has_time and self.has_view):
            raise ValueError("a time x view grid needs mappers with both a Time and a View Mapper (distil in joint mode)")
        deltas = np.linspace(-1.0, 1.0, 5) if deltas is None else np.asarray(deltas, dtype=np.float64)
        azimuths = np.linspace(-90.0, 90.0, 5) if azimuths is None else np.asarray(azimuths, dtype=np.float64)
        times = [float(d) for d in deltas for _ in azimuths]
        views = [ViewChange(azimuth_deg=float(a)) for _ in deltas for a in azimuths]
        images = self(prompt, image, time=times, view=views, **kwargs)
        return deltas, azimuths, images.reshape(len(deltas), len(azimuths), *images.shape[1:])


# ---------------------------------------------------------------------- world references
@dataclass
class WorldReference:
    """A reference render of a world scene, with what is needed to show the truth beside a sweep."""

    scene: object
    image: np.ndarray  # (H, W, 3) in [0, 1]
    caption: str
    time: float
    azimuth_deg: float
    elevation_deg: float
    radius: float

    def truth(self, d: float = 0.0, view: ViewChange | None = None, size: int = 64) -> np.ndarray | None:
        """The true render at t_ref + d from the changed camera; None where t leaves [0, 1]."""
        t = self.time + float(d)
        if not 0.0 <= t <= 1.0:
            return None
        v = view or ViewChange()
        cam = orbit_camera(
            self.azimuth_deg + v.azimuth_deg, self.elevation_deg + v.elevation_deg, self.radius + v.radius, DEFAULT_ORBIT.fov_x_deg, size, size
        )
        return render_view(self.scene, cam, t)["rgb"].astype(np.float32)


def world_reference(seed: int, size: int = 64, time: float = 0.5, azimuth_deg: float = 30.0, elevation_deg: float = 25.0, radius: float = 3.2) -> WorldReference:
    if not 0.0 <= time <= 1.0:
        raise ValueError(f"reference time must lie in [0, 1], got {time}")
    scene = make_scene(int(seed))
    cam = orbit_camera(azimuth_deg, elevation_deg, radius, DEFAULT_ORBIT.fov_x_deg, size, size)
    rgb = render_view(scene, cam, time)["rgb"].astype(np.float32)
    return WorldReference(scene, rgb, scene.caption, time, azimuth_deg, elevation_deg, radius)


def panel(reference: np.ndarray, rows: list[list[np.ndarray | None]], pad: int = 2) -> np.ndarray:
    """One image of a generation for `fourdistill generate`: the reference (H, W, 3) in the first
    column of the first row (white below it), then each row's images (H, W, 3) in [0, 1]
    (None: a grey cell, e.g. a true frame outside t in [0, 1])."""
    h, w, _ = reference.shape
    grey = np.full((h, w, 3), 0.5, dtype=np.float32)
    blank = np.ones((h, w, 3), dtype=np.float32)
    cells = []
    for r, row in enumerate(rows):
        cells.append(reference if r == 0 else blank)
        cells.extend(grey if im is None else im for im in row)
    return image_grid(np.stack(cells), rows=len(rows), pad=pad)
