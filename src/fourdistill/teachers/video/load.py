"""One loader for the video teachers, in the two layouts text-to-video users have today.

`load_video_teacher(path_or_id, base=None)` takes
  - an AnimateDiff motion adapter (a folder or hub id whose config.json is a `MotionAdapter`,
    e.g. the embedded video teacher or "guoyww/animatediff-motion-adapter-v1-5-2") on top of
    an image stack `base` ('embedded' by default, an SD 1.x folder or hub id), through the call
    AnimateDiff users make:
        AnimateDiffPipeline.from_pretrained(base, motion_adapter=MotionAdapter.from_pretrained(adapter))
  - a Zeroscope / ModelScope text-to-video folder or hub id (model_index.json whose unet is a
    `UNet3DConditionModel`, e.g. "cerspense/zeroscope_v2_576w"), loaded part by part:
    diffusers moved its TextToVideoSDPipeline to the deprecated pipelines, the parts' classes
    stay current.
Anything else is a VideoLoadError naming the folder and the layouts it expected. Hub ids
that cannot be reached get the project's "no network" message (teachers.image.load).

Both come back as a `VideoTeacher` with the DPM-Solver multistep sampler (Lu et al. 2022) over
the model's own noise schedule, and `predict` runs either U-Net on latents (B, C, F, H, W).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    MotionAdapter,
    UNet3DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from ..image.load import StackLoadError, _first_line, _from_hub, check_stack_folder, resolve_model
from .model import check_clip_length, max_frames, video_unet_output

KINDS = ("animatediff", "zeroscope")
# Written next to a MotionAdapter's config.json by the video trainer: the clip length it was
# trained on ({"num_frames": 8}); MotionAdapter.from_pretrained ignores it.
VIDEO_INFO_NAME = "fourdistill_video.json"
# Clip lengths of the real models when the folder does not say: AnimateDiff's motion modules
# are trained on 16-frame clips, zeroscope_v2_576w on 24 frames.
DEFAULT_FRAMES = {"animatediff": 16, "zeroscope": 24}

_ZEROSCOPE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_EXPECTED = (
    "expected an AnimateDiff motion adapter (config.json with _class_name MotionAdapter) or a "
    "Zeroscope/ModelScope folder (model_index.json with unet/ a UNet3DConditionModel)"
)


class VideoLoadError(StackLoadError):
    """A video teacher that cannot be loaded; the message names the folder, file or id."""


@dataclass
class VideoTeacher:
    """A text-to-video denoiser and the parts it samples with.

    unet: UNetMotionModel (animatediff) or UNet3DConditionModel (zeroscope), on latents
    (B, C, F, H, W); vae, text_encoder, tokenizer: the image stack's (AnimateDiff) or the
    folder's own (Zeroscope, SD's VAE and a CLIP text encoder); scheduler: DPM-Solver multistep
    over the model's training schedule; num_frames: the clip length it was trained on.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    kind: str
    num_frames: int
    source: str = ""

    @property
    def max_frames(self) -> int | None:
        """The longest clip the U-Net takes (an adapter's motion_max_seq_length), or None."""
        return max_frames(self.unet)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def resolution(self) -> int:
        """Frame size in pixels (latent sample size x the VAE's downsampling)."""
        return int(self.unet.config.sample_size) * 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device=None, dtype=None) -> "VideoTeacher":
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "VideoTeacher":
        for m in (self.unet, self.vae, self.text_encoder):
            m.eval()
        return self

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, L, D) last hidden states for `captions`, padded to the tokenizer's length (SD's)."""
        ids = self.tokenizer(list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, h, w) -> frames (N, H, W, 3) float in [0, 1]."""
        x = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return ((x.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1)


def predict(teacher: VideoTeacher, latents: torch.Tensor, t, text_states: torch.Tensor) -> torch.Tensor:
    """The teacher's output for latents (B, C, F, H, W) at timesteps t ((B,) or one number) on
    text states (B, L, D), the same shape as `latents`, for either layout. A clip longer than
    the adapter's frame positions is a ClipLengthError naming `latents`."""
    return video_unet_output(teacher.unet, latents, t, text_states)


def check_num_frames(teacher: VideoTeacher, num_frames: int, what: str = "num_frames") -> None:
    """ClipLengthError naming `what` unless the teacher's U-Net takes clips of `num_frames`."""
    check_clip_length(teacher.unet, int(num_frames), what)


# ------------------------------------------------------------------------------- detection


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VideoLoadError(path, f"not readable JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise VideoLoadError(path, "not a JSON object")
    return data


def folder_layout(folder) -> str:
    """'animatediff' or 'zeroscope' for a local folder, else a VideoLoadError naming it and
    saying what it found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoLoadError(folder, f"not a folder ({_EXPECTED})")
    config, index = folder / "config.json", folder / "model_index.json"
    if config.is_file():
        name = _read_json(config).get("_class_name")
        if name == "MotionAdapter":
            return "animatediff"
        raise VideoLoadError(folder, f"config.json is a {name or 'model without _class_name'}, not a video teacher ({_EXPECTED})")
    if index.is_file():
        unet_config = folder / "unet" / "config.json"
        if not unet_config.is_file():
            raise VideoLoadError(unet_config, f"missing ({_EXPECTED})")
        name = _read_json(unet_config).get("_class_name")
        if name == "UNet3DConditionModel":
            return "zeroscope"
        hint = " (an image stack: pass it as base= with a motion adapter)" if name == "UNet2DConditionModel" else ""
        raise VideoLoadError(folder, f"its unet is a {name or 'model without _class_name'}{hint}, not a video teacher ({_EXPECTED})")
    raise VideoLoadError(folder, f"no config.json or model_index.json ({_EXPECTED})")


def _hub_layout(model_id: str) -> str:
    """The layout of a hub repository, from its model_index.json / config.json (cached, or
    listed and downloaded); OSError when the hub cannot be reached."""
    from huggingface_hub import hf_hub_download, model_info
    from huggingface_hub.errors import LocalEntryNotFoundError

    listed = None

    def read(name):
        nonlocal listed
        try:
            return json.loads(Path(hf_hub_download(model_id, name, local_files_only=True)).read_text())
        except LocalEntryNotFoundError:
            pass
        if listed is None:  # one listing answers which files exist (hf_hub_download retries a missing host for ~20 s)
            try:
                listed = {s.rfilename for s in model_info(model_id).siblings or []}
            except OSError:
                raise
            except Exception as exc:  # the HTTP client's connection errors are not OSErrors
                raise OSError(_first_line(exc)) from exc
        if name not in listed:
            return None
        return json.loads(Path(hf_hub_download(model_id, name)).read_text())

    index = read("model_index.json")
    if index is not None:
        unet = read("unet/config.json") or {}
        if unet.get("_class_name") == "UNet3DConditionModel":
            return "zeroscope"
    else:
        config = read("config.json") or {}
        if config.get("_class_name") == "MotionAdapter":
            return "animatediff"
    raise VideoLoadError(model_id, f"not a video teacher on the hub ({_EXPECTED})")


def _trained_frames(folder: Path | None, kind: str) -> int:
    if folder is not None and (folder / VIDEO_INFO_NAME).is_file():
        frames = _read_json(folder / VIDEO_INFO_NAME).get("num_frames")
        if not isinstance(frames, int) or frames < 1:
            raise VideoLoadError(folder / VIDEO_INFO_NAME, f"num_frames must be a positive integer, got {frames!r}")
        return frames
    return DEFAULT_FRAMES[kind]


# ------------------------------------------------------------------------------- loading


def load_video_teacher(path_or_id: str, base: str | None = None, device="cpu", dtype=None) -> VideoTeacher:
    """A VideoTeacher from a motion adapter folder / hub id (on the image stack `base`:
    'embedded' or None, an SD folder, a hub id) or a Zeroscope / ModelScope folder / hub id
    (`base` must then be None: the folder has its own parts). float32 unless `dtype`."""
    dtype = dtype or torch.float32
    if path_or_id is None:
        raise VideoLoadError("path_or_id", f"no video teacher given ({_EXPECTED})")
    where, local = _resolve(path_or_id)
    kind = folder_layout(where) if local else _from_hub(lambda: _hub_layout(where), where)
    if kind == "animatediff":
        teacher = _load_animatediff(where, local, base, dtype)
    else:
        if base is not None:
            raise VideoLoadError(where, "a Zeroscope/ModelScope folder has its own text encoder and VAE; do not pass base")
        teacher = _load_zeroscope(where, local, dtype)
    teacher.num_frames = _trained_frames(Path(where) if local else None, kind)
    return teacher.to(device).eval()


def _resolve(path_or_id: str) -> tuple[str, bool]:
    path = Path(path_or_id).expanduser()
    if path.exists():
        return str(path), True
    try:
        return resolve_model(path_or_id)
    except StackLoadError:
        raise VideoLoadError(path_or_id, f"no such folder (pass a folder or a hub id like owner/name; {_EXPECTED})") from None


def _dpm_solver(scheduler):
    """DPM-Solver multistep over `scheduler`'s training schedule (what load_stack samples with)."""
    return DPMSolverMultistepScheduler.from_config(scheduler.config)


def _load_animatediff(adapter_where: str, adapter_local: bool, base: str | None, dtype) -> VideoTeacher:
    base_where, base_local = resolve_model(base)
    if adapter_local:
        weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                   "diffusion_pytorch_model.fp16.safetensors")
        if not any((Path(adapter_where) / w).is_file() for w in weights):
            raise VideoLoadError(Path(adapter_where) / weights[0], "missing weight file (the motion adapter's)")
        try:
            adapter = MotionAdapter.from_pretrained(adapter_where, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise VideoLoadError(adapter_where, f"cannot load as a MotionAdapter ({_first_line(exc)})") from None
    else:
        adapter = _from_hub(lambda: MotionAdapter.from_pretrained(adapter_where, torch_dtype=dtype), adapter_where)

    def pipeline(**kw):
        return AnimateDiffPipeline.from_pretrained(base_where, motion_adapter=adapter, torch_dtype=dtype, **kw)

    if base_local:
        check_stack_folder(base_where)
        try:
            pipe = pipeline(local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise VideoLoadError(adapter_where, f"does not fit the image stack {base_where} ({_first_line(exc)})") from None
    else:
        pipe = _from_hub(pipeline, base_where)
    return VideoTeacher(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                        scheduler=_dpm_solver(pipe.scheduler), kind="animatediff", num_frames=DEFAULT_FRAMES["animatediff"],
                        source=f"{adapter_where} on {base or 'embedded'}")


def _load_zeroscope(where: str, local: bool, dtype) -> VideoTeacher:
    kw = dict(local_files_only=True) if local else {}
    if local:
        for part in _ZEROSCOPE_PARTS:
            if not (Path(where) / part).is_dir():
                raise VideoLoadError(Path(where) / part, "missing (a Zeroscope/ModelScope folder has unet, vae, text_encoder, tokenizer, scheduler)")

    def load():
        return VideoTeacher(
            unet=UNet3DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=dtype, **kw),
            vae=AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=dtype, **kw),
            text_encoder=CLIPTextModel.from_pretrained(where, subfolder="text_encoder", torch_dtype=dtype, **kw),
            tokenizer=CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **kw),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(where, subfolder="scheduler", **kw),
            kind="zeroscope", num_frames=DEFAULT_FRAMES["zeroscope"], source=str(where),
        )

    if not local:
        return _from_hub(load, where)
    try:
        return load()
    except (OSError, ValueError, KeyError) as exc:
        raise VideoLoadError(where, f"cannot load as a Zeroscope/ModelScope folder ({_first_line(exc)})") from None
