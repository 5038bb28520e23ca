"""Nerfstudio captures: a `transforms.json` of posed images of a static scene (Tancik et al. 2023).

Intrinsics fl_x, fl_y, cx, cy, w, h are shared (top level) or per frame (per-frame keys win).
There is no time: every frame has time 0. Optional per-frame `mask_path` images give masks.
"""

from __future__ import annotations

from pathlib import Path

from ..cameras import Camera
from .base import FrameInfo, SourceError
from .images import ImageListSource, image_size
from .transforms import check_listed_once, frame_list, lookup, number, pinhole_intrinsics, read_json, resolve_image, transform_matrix

# Nerfstudio camera models a pinhole `Camera` represents; OPENCV's distortion is dropped.
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


class NerfstudioSource(ImageListSource):
    """A nerfstudio `transforms.json` (give the file or its folder).

    background: RGB in [0, 1] that RGBA images are composited over (their alpha is the mask
    unless the frame has a `mask_path`). cache_size: how many decoded frames to keep.
    """

    kind = "nerfstudio"

    def __init__(self, path, background=(1.0, 1.0, 1.0), cache_size: int = 64):
        super().__init__(background, cache_size)
        path = Path(path)
        json_path = path / "transforms.json" if path.is_dir() else path
        folder = json_path.parent
        meta = read_json(json_path)
        frames = frame_list(meta, json_path)
        self.path = json_path
        self.name = folder.name
        self._distortion_ignored = False
        self._time_keys_ignored = any("time" in fr for fr in frames)

        images = [resolve_image(folder, fr.get("file_path"), json_path, f"frames[{i}].file_path") for i, fr in enumerate(frames)]
        check_listed_once(images, json_path)
        infos, fields, masks, size, first = [], [], [], None, None
        for i, fr in enumerate(frames):
            self._check_camera_model(fr, meta, json_path, i)
            field_name = f"frames[{i}].file_path"
            image = images[i]
            c2w = transform_matrix(fr, json_path, i)
            wh = image_size(image, field_name)
            self._check_declared_size(fr, meta, wh, image, json_path, i)
            if size is None:
                size, first = wh, image
            elif wh != size:
                raise SourceError(
                    image, f"image is {wh[0]}x{wh[1]} but {first.name} is {size[0]}x{size[1]}: all images must share one size", field_name
                )
            mask = None
            if fr.get("mask_path") is not None:
                mask_field = f"frames[{i}].mask_path"
                mask = resolve_image(folder, fr["mask_path"], json_path, mask_field)
                mask_wh = image_size(mask, mask_field)
                if mask_wh != wh:
                    raise SourceError(mask, f"mask is {mask_wh[0]}x{mask_wh[1]} but its image is {wh[0]}x{wh[1]}", mask_field)
            fx, fy, cx, cy = pinhole_intrinsics(fr, meta, wh, json_path, i, focal_key="fl_x")
            camera = Camera(c2w, fx, fy, cx, cy, wh[0], wh[1])
            infos.append(FrameInfo(index=i, time01=0.0, camera=camera, file=str(image)))
            fields.append(field_name)
            masks.append(mask)
        self._set_frames(infos, size, fields, masks)

    def _check_camera_model(self, frame: dict, meta: dict, path: Path, i: int) -> None:
        model, name = lookup(frame, meta, "camera_model", i)
        if model is None:
            return
        if model not in PINHOLE_MODELS:
            raise SourceError(path, f"camera model {model!r} is not a pinhole camera (supported: {', '.join(PINHOLE_MODELS)})", name)
        for key in DISTORTION_KEYS:
            value, key_name = lookup(frame, meta, key, i)
            if value is not None and number(value, path, key_name) != 0.0:
                self._distortion_ignored = True

    @staticmethod
    def _check_declared_size(frame: dict, meta: dict, wh: tuple[int, int], image: Path, path: Path, i: int) -> None:
        for key, actual in (("w", wh[0]), ("h", wh[1])):
            value, name = lookup(frame, meta, key, i)
            if value is None:
                continue
            declared = number(value, path, name, positive=True)
            if declared != actual:
                side = "width" if key == "w" else "height"
                raise SourceError(image, f"image {side} is {actual} but {path.name} says {key} = {value!r}", name)

    def problems(self) -> list[str]:
        out = ["static capture: no time, every frame has time 0 (view pairs only)"]
        if self._distortion_ignored:
            out.append("lens distortion (k1..k4, p1, p2) is ignored: images are treated as pinhole")
        if self._time_keys_ignored:
            out.append("'time' keys are ignored: a nerfstudio capture has no time (a D-NeRF folder carries times)")
        return out
