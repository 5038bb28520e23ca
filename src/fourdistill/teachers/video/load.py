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

from ...engine.checkpoint import read_json_object
from ..image.load import StackLoadError, check_stack_folder, first_line, from_hub, resolve_model
from ..parts import TeacherParts
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
class VideoTeacher(TeacherParts):
    """A text-to-video denoiser and the parts it samples with (TeacherParts: encode_text,
    decode_latents, the training scheduler, ...).

    unet: UNetMotionModel (animatediff) or UNet3DConditionModel (zeroscope), on latents
    (B, C, F, H, W); vae, text_encoder, tokenizer: the image stack's (AnimateDiff) or the
    folder's own (Zeroscope, SD's VAE and a CLIP text encoder); scheduler: DPM-Solver multistep
    over the model's training schedule; num_frames: the clip length it was trained on.
    """

    kind: str = "animatediff"  # KINDS
    num_frames: int = 16

    @property
    def max_frames(self) -> int | None:
        """The longest clip the U-Net takes (an adapter's motion_max_seq_length), or None."""
        return max_frames(self.unet)

    def predict(self, latents: torch.Tensor, timesteps, text_states: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) output; see `predict`."""
        return video_unet_output(self.unet, latents, timesteps, text_states)


def predict(teacher: VideoTeacher, latents: torch.Tensor, t, text_states: torch.Tensor) -> torch.Tensor:
    """The teacher's output for latents (B, C, F, H, W) at timesteps t ((B,) or one number) on
    text states (B, L, D), the same shape as `latents`, for either layout. A clip longer than
    the adapter's frame positions is a ClipLengthError naming `latents`."""
    return video_unet_output(teacher.unet, latents, t, text_states)


def check_num_frames(teacher: VideoTeacher, num_frames: int, what: str = "num_frames") -> None:
    """ClipLengthError naming `what` unless the teacher's U-Net takes clips of `num_frames`."""
    check_clip_length(teacher.unet, int(num_frames), what)


# ------------------------------------------------------------------------------- detection


def folder_layout(folder) -> str:
    """'animatediff' or 'zeroscope' for a local folder, else a VideoLoadError naming it and
    saying what it found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoLoadError(folder, f"not a folder ({_EXPECTED})")
    config, index = folder / "config.json", folder / "model_index.json"
    if config.is_file():
        name = read_json_object(config, "model config").get("_class_name")
        if name == "MotionAdapter":
            return "animatediff"
        raise VideoLoadError(folder, f"config.json is a {name or 'model without _class_name'}, not a video teacher ({_EXPECTED})")
    if index.is_file():
        unet_config = folder / "unet" / "config.json"
        if not unet_config.is_file():
            raise VideoLoadError(unet_config, f"missing ({_EXPECTED})")
        name = read_json_object(unet_config, "U-Net config").get("_class_name")
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
                raise OSError(first_line(exc)) from exc
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


def read_video_info(folder) -> dict:
    """The video trainer's description next to an adapter (VIDEO_INFO_NAME: num_frames, base,
    training), checked; {} when the folder has none (a real AnimateDiff adapter)."""
    path = Path(folder) / VIDEO_INFO_NAME
    if not path.is_file():
        return {}
    info = read_json_object(path, "video teacher description")
    frames = info.get("num_frames")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise VideoLoadError(path, f"num_frames must be a positive integer, got {frames!r}")
    if not isinstance(info.get("base", "embedded"), str):
        raise VideoLoadError(path, f"base must name a stack ('embedded', a folder or a hub id), got {info['base']!r}")
    return info


# ------------------------------------------------------------------------------- loading


def load_video_teacher(path_or_id: str, base: str | None = None, device="cpu", dtype=None) -> VideoTeacher:
    """A VideoTeacher from a motion adapter folder / hub id (on the image stack `base`:
    'embedded' or None, an SD folder, a hub id) or a Zeroscope / ModelScope folder / hub id
    (`base` must then be None: the folder has its own parts). float32 unless `dtype`."""
    dtype = dtype or torch.float32
    if path_or_id is None:
        raise VideoLoadError("path_or_id", f"no video teacher given ({_EXPECTED})")
    where, local = _resolve(str(path_or_id))
    kind = folder_layout(where) if local else from_hub(lambda: _hub_layout(where), where)
    if kind == "animatediff":
        info = read_video_info(where) if local else {}
        base = base if base is not None else info.get("base")
        teacher = _load_animatediff(where, local, base, dtype)
        teacher.num_frames = info.get("num_frames", DEFAULT_FRAMES[kind])
    else:
        if base is not None:
            raise VideoLoadError(where, "a Zeroscope/ModelScope folder has its own text encoder and VAE; do not pass base")
        teacher = _load_zeroscope(where, local, dtype)
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
            raise VideoLoadError(adapter_where, f"cannot load as a MotionAdapter ({first_line(exc)})") from None
    else:
        adapter = from_hub(lambda: MotionAdapter.from_pretrained(adapter_where, torch_dtype=dtype), adapter_where)

    def pipeline(**kw):
        return AnimateDiffPipeline.from_pretrained(base_where, motion_adapter=adapter, torch_dtype=dtype, **kw)

    if base_local:
        check_stack_folder(base_where)
        try:
            pipe = pipeline(local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise VideoLoadError(adapter_where, f"does not fit the image stack {base_where} ({first_line(exc)})") from None
    else:
        pipe = from_hub(pipeline, base_where)
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
        return from_hub(load, where)
    try:
        return load()
    except (OSError, ValueError, KeyError) as exc:
        raise VideoLoadError(where, f"cannot load as a Zeroscope/ModelScope folder ({first_line(exc)})") from None
