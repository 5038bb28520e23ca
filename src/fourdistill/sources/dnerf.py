"""D-NeRF folders: `transforms_{train,val,test}.json` and RGBA PNGs (Pumarola et al. 2021).

Each frame has its own camera and time. Everything in the JSON files is checked when the
source opens (poses, times, intrinsics, that every image exists with one size); pixels are
decoded when a frame is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..cameras import Camera
from .base import FrameInfo, SourceError
from .images import ImageListSource, image_size, time_problems
from .transforms import check_listed_once, frame_list, frame_time, pinhole_intrinsics, read_json, resolve_image, transform_matrix
from .world_seed import scene_seed

DNERF_SPLITS = ("train", "val", "test")
SPLIT_CHOICES = DNERF_SPLITS + ("all",)


def split_files(folder: Path) -> dict[str, Path]:
    """The split files present in `folder`: {"train": .../transforms_train.json, ...}."""
    return {s: Path(folder) / f"transforms_{s}.json" for s in DNERF_SPLITS if (Path(folder) / f"transforms_{s}.json").is_file()}


class DNeRFSource(ImageListSource):
    """A D-NeRF scene folder, one split or all of them.

    split: "train", "val", "test" or "all" (the present splits, in that order).
    background: RGB in [0, 1] that RGBA images are composited over; the alpha becomes the
    frame's mask (RGB images have mask None).
    Times: each frame's "time" (checked finite and in [0, 1]); when no frame of a split has
    one, frame i of N gets i / (N - 1) (Pumarola et al. 2021).
    Focal length: 0.5 * W / tan(0.5 * camera_angle_x), or per-frame fl_x / fl_y / cx / cy.
    cache_size: how many decoded frames to keep.
    """

    kind = "dnerf"

    def __init__(self, folder, split: str = "train", background=(1.0, 1.0, 1.0), cache_size: int = 64):
        super().__init__(background, cache_size)
        folder = Path(folder)
        if split not in SPLIT_CHOICES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
        if not folder.is_dir():
            raise SourceError(folder, "no such folder")
        present = split_files(folder)
        if split == "all":
            if not present:
                raise SourceError(folder, "no transforms_train.json, transforms_val.json or transforms_test.json: not a D-NeRF folder")
            splits = list(present)
        else:
            if split not in present:
                have = ", ".join(present) or "none"
                raise SourceError(
                    folder / f"transforms_{split}.json", f"file is missing: this folder has no {split} split (splits present: {have})"
                )
            splits = [split]
        self.folder = folder
        self.split = split
        self.splits = splits
        self.name = f"{folder.name} ({split})"
        self.caption, self._caption_problem = self._read_caption(folder)
        self.world_seed = scene_seed(folder)
        self.time_fallback: list[str] = []  # splits whose times were i / (N - 1)
        self.frame_splits: list[str] = []

        infos, fields, size, first = [], [], None, None
        for s in splits:
            path = present[s]
            meta = read_json(path)
            frames = frame_list(meta, path)
            times = self._times(frames, path)
            if times is None:
                self.time_fallback.append(s)
                n = len(frames)
                times = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]
            images = [resolve_image(folder, fr.get("file_path"), path, f"frames[{i}].file_path") for i, fr in enumerate(frames)]
            check_listed_once(images, path)
            for i, fr in enumerate(frames):
                field_name = f"frames[{i}].file_path"
                image = images[i]
                c2w = transform_matrix(fr, path, i)
                wh = image_size(image, field_name)
                if size is None:
                    size, first = wh, image
                elif wh != size:
                    raise SourceError(
                        image,
                        f"image is {wh[0]}x{wh[1]} but {first.name} is {size[0]}x{size[1]}: all images must share one size",
                        field_name,
                    )
                fx, fy, cx, cy = pinhole_intrinsics(fr, meta, wh, path, i)
                camera = Camera(c2w, fx, fy, cx, cy, wh[0], wh[1])
                infos.append(FrameInfo(index=len(infos), time01=times[i], camera=camera, file=str(image)))
                fields.append(field_name)
                self.frame_splits.append(s)
        self._set_frames(infos, size, fields)

    @staticmethod
    def _times(frames: list[dict], path: Path) -> list[float] | None:
        """Each frame's checked "time", or None when no frame has one."""
        has = ["time" in fr for fr in frames]
        if not any(has):
            return None
        if not all(has):
            i = has.index(not has[0])
            state = "lacks" if has[0] else "has"
            raise SourceError(
                path, f"frame {i} {state} a 'time' unlike frame 0: give 'time' on every frame or on none", f"frames[{i}].time"
            )
        return [frame_time(fr["time"], path, f"frames[{i}].time") for i, fr in enumerate(frames)]

    @staticmethod
    def _read_caption(folder: Path) -> tuple[str | None, str | None]:
        """(caption, problem): the caption the world's exporter writes to scene.json, if any."""
        path = folder / "scene.json"
        if not path.is_file():
            return None, None
        try:
            caption = json.loads(path.read_text(encoding="utf-8")).get("caption")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError):
            return None, f"{path.name} is not a readable JSON object: no caption"
        return (caption, None) if isinstance(caption, str) else (None, None)

    def problems(self) -> list[str]:
        out = [self._caption_problem] if self._caption_problem else []
        if self.time_fallback:
            out.append(f"no 'time' in {', '.join(self.time_fallback)}: times taken as i / (N - 1) in file order")
        return out + time_problems([i.time01 for i in self._infos])
