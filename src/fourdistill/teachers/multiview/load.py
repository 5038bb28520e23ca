"""Load a multi-view teacher: the project's folder, a full diffusers folder, or MVDream's original file.

`load_multiview_teacher(path_or_id, base=None)` returns a `MultiViewTeacher` for

- a teacher folder written by `fourdistill teachers train` (kind multiview):
  `multiview.json` (views, camera convention, the base stack) and `unet/` (a diffusers
  UNet2DConditionModel in MVDream's layout); the VAE, text encoder, tokenizer and scheduler
  come from the base stack ('embedded' unless `base` says otherwise), as MVDream keeps SD's;
- a full diffusers folder (model_index.json, unet/ in MVDream's layout, vae/, text_encoder/,
  tokenizer/, scheduler/), converted or downloaded;
- MVDream's original checkpoint file (`sd-v2.1-base-4view.pt` or .ckpt / .safetensors, Shi et
  al. 2024): its U-Net is converted (convert.from_mvdream) onto the base's U-Net config, and the
  other parts come from `base` (for the released model: "stabilityai/stable-diffusion-2-1-base");
- a hub id of a diffusers folder (the usual "no network" error here).

Anything else is a clear error naming the path and what was expected.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..parts import TeacherParts
from .model import NUM_VIEWS, MultiViewError, is_multiview_config, multiview_config, predict_views, set_multiview

TEACHER_FILE = "multiview.json"
CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth", ".safetensors", ".bin")
# The base MVDream's released 4-view model was fine-tuned from (and shares VAE and text encoder with).
MVDREAM_BASE = "stabilityai/stable-diffusion-2-1-base"


@dataclass
class MultiViewTeacher:
    """An MVDream-layout U-Net with its base stack's parts. `predict` takes (B, V, C, h, w)."""

    parts: TeacherParts
    num_views: int = NUM_VIEWS

    @property
    def unet(self):
        return self.parts.unet

    def predict(self, latents, timesteps, text_states, cameras):
        """(B, V, C, h, w) output; see model.predict_views."""
        return predict_views(self.parts.unet, latents, timesteps, text_states, cameras)


def read_teacher_file(folder: Path) -> dict:
    from ...engine.checkpoint import read_json_object

    info = read_json_object(folder / TEACHER_FILE, "multi-view teacher description")
    views = info.get("num_views")
    if not isinstance(views, int) or views < 1:
        raise MultiViewError(f"{folder / TEACHER_FILE}: num_views must be a positive integer, got {views!r}")
    return info


def load_multiview_teacher(model, base: str | None = None, num_views: int | None = None, dtype=None) -> MultiViewTeacher:
    """A MultiViewTeacher from a teacher folder, a diffusers folder, an MVDream original file or a
    hub id (see the module docstring). num_views: override the folder's (default 4)."""
    from diffusers import UNet2DConditionModel

    from ..image.load import StackLoadError, first_line, from_hub, resolve_model
    from ..parts import load_base_parts

    dtype = dtype or torch.float32
    path = Path(str(model)).expanduser()
    if path.is_file():
        return _from_original(path, base or MVDREAM_BASE, num_views or NUM_VIEWS, dtype)
    if path.is_dir() and (path / TEACHER_FILE).is_file():
        info = read_teacher_file(path)
        parts = load_base_parts(base or info.get("base", "embedded"), dtype)
        unet_dir = path / "unet"
        _check_unet_folder(unet_dir)
        try:
            parts.unet = UNet2DConditionModel.from_pretrained(str(unet_dir), torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MultiViewError(f"{unet_dir}: cannot load the multi-view U-Net ({first_line(exc)})") from None
        parts.source = str(path)
        return _finish(parts, num_views or info["num_views"], unet_dir)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise MultiViewError(f"{path}: not a multi-view teacher (expected {TEACHER_FILE} + unet/, a diffusers folder "
                                 "with model_index.json, or an MVDream checkpoint file)")
        _check_unet_folder(path / "unet")
        parts = load_base_parts(str(path), dtype)
        return _finish(parts, num_views or NUM_VIEWS, path / "unet")
    try:
        where, local = resolve_model(str(model))
    except StackLoadError:
        raise MultiViewError(f"{model}: no such file or folder (pass a multi-view teacher folder, an MVDream checkpoint file, or a hub id)") from None
    parts = from_hub(lambda: load_base_parts(where, dtype), where)
    return _finish(parts, num_views or NUM_VIEWS, where)


def _check_unet_folder(unet_dir: Path) -> None:
    from ...engine.checkpoint import read_json_object

    config = read_json_object(unet_dir / "config.json", "U-Net config")
    if not is_multiview_config(config):
        raise MultiViewError(f"{unet_dir / 'config.json'}: not a multi-view U-Net (MVDream's layout has class_embed_type "
                             f"'projection' with 16 camera inputs; got {config.get('class_embed_type')!r})")


def _finish(parts: TeacherParts, num_views: int, where) -> MultiViewTeacher:
    if not is_multiview_config(parts.unet.config):
        raise MultiViewError(f"{where}: the U-Net is not in MVDream's layout (class_embed_type 'projection', 16 camera inputs)")
    set_multiview(parts.unet, num_views)
    return MultiViewTeacher(parts.eval(), num_views)


def _read_original(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a damaged file
        raise MultiViewError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MultiViewError(f"{path}: not a state dict")
    return state


def _from_original(path: Path, base: str, num_views: int, dtype) -> MultiViewTeacher:
    from diffusers import UNet2DConditionModel

    from ..parts import load_base_parts
    from .convert import from_mvdream

    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise MultiViewError(f"{path}: not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    state = _read_original(path)
    parts = load_base_parts(base, dtype)
    config = multiview_config(parts.unet.config)
    converted = from_mvdream(state, config, where=path)
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise MultiViewError(f"{path}: the MVDream U-Net does not fit {base}'s U-Net config "
                             f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    parts.unet = unet.to(dtype=dtype)
    parts.source = str(path)
    return _finish(parts, num_views, path)


def save_multiview_teacher(unet, folder, base: str, num_views: int, info: dict | None = None, float16: bool = True, card: str | None = None) -> Path:
    """Write a teacher folder: multiview.json and unet/ (float16 weights when `float16`; they load
    back as float32) and the model card `card` (README.md), atomically as one folder. Returns the folder."""
    from ...engine.checkpoint import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        tmp = Path(tmp)
        # processors are not saved (the loader sets them); a copy keeps the caller's U-Net as it is
        unet_to_save = copy.deepcopy(unet)
        if float16:
            unet_to_save.to(torch.float16)
        set_multiview(unet_to_save, 1)
        unet_to_save.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        description = {"kind": "multiview", "num_views": int(num_views), "base": base,
                       "camera": "camera-to-world 4x4, OpenGL camera axes, z-up world; translation normalised to unit length; flattened row-major (MVDream)",
                       "unet_dtype": "float16" if float16 else str(unet.dtype).removeprefix("torch."),
                       **({"training": info} if info else {})}
        (tmp / TEACHER_FILE).write_text(json.dumps(description, indent=2) + "\n")
        if card:
            (tmp / "README.md").write_text(card)
    return folder
