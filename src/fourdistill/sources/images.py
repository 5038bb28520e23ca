"""Image files behind the discrete sources: sizes from headers, RGBA over a background, a cache.

Readers list their image files when they open (checking that each exists, has a readable
header and shares one size) and decode pixels only when a frame is asked for. PIL is
imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .base import Frame, FrameInfo, Source, SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# Our choice: fewer distinct times than this is worth a warning for time-pair sampling.
FEW_DISTINCT_TIMES = 8

# Our bound on the pixels one image may announce in its header (8192 x 8192): far above any
# 4D capture this project reads, far below what would exhaust memory when decoded (a header
# can claim 100000 x 100000 in a few bytes). Checked on the header, before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192


def natural_key(name: str) -> tuple:
    """Sort key that orders "frame_2" before "frame_10" (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts) + ((1, 0, name),)


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder` (hidden files skipped), in natural order."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def check_background(background) -> np.ndarray:
    """(3,) float32 RGB in [0, 1] that transparent pixels are composited over."""
    try:
        bg = np.asarray(background, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        bg = np.zeros(0, dtype=np.float32)
    if bg.shape != (3,) or not np.all(np.isfinite(bg)) or bg.min() < 0.0 or bg.max() > 1.0:
        raise ValueError(f"background must be three numbers in [0, 1] (an RGB colour), got {background!r}")
    return bg


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_image(path: Path, field_name: str | None = None, what: str = "image"):
    """PIL's lazy open of `path` (header only), refusing a header that announces more than
    MAX_IMAGE_PIXELS; SourceError naming the file when missing, unreadable or too large."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise SourceError(path, f"{what} file is missing", field_name)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise SourceError(path, f"{what} is too large to decode ({_one_line(exc)})", field_name) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SourceError(path, f"unreadable {what} ({_one_line(exc)})", field_name) from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise SourceError(path, f"{what} header announces {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS} this reader decodes", field_name)
    if w < 1 or h < 1:
        im.close()
        raise SourceError(path, f"{what} header announces {w}x{h} pixels: an empty image", field_name)
    return im


def decode_check(path: Path, field_name: str | None = None) -> None:
    """Decode every pixel of `path` (what a header check cannot see: truncated or damaged
    data); SourceError naming the file otherwise."""
    from PIL import Image

    im = open_image(path, field_name)
    try:
        with im:
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SourceError(path, f"damaged image: its pixels do not decode ({_one_line(exc)})", field_name) from None


def image_size(path: Path, field_name: str | None = None) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    with open_image(path, field_name) as im:
        return int(im.size[0]), int(im.size[1])


def _decode(path: Path, field_name: str | None):
    """Decode an image to float32 (H, W, C) in [0, 1], C = 3 or 4 (with alpha)."""
    from PIL import Image, UnidentifiedImageError

    im = open_image(path, field_name)
    try:
        with im:
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grayscale
                gray = np.asarray(im, dtype=np.float32) / 65535.0
                return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
            return np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SourceError(path, f"unreadable image ({_one_line(exc)})", field_name) from None


def read_image(path: Path, background: np.ndarray, field_name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file.

    Returns rgb (H, W, 3) float32 in [0, 1] and mask (H, W) float32: the alpha channel for
    RGBA files, with rgb composited over `background` (3,); None for files without alpha.
    """
    pixels = _decode(Path(path), field_name)
    if pixels.shape[-1] == 3:
        return np.ascontiguousarray(pixels), None
    alpha = pixels[..., 3]
    rgb = pixels[..., :3] * alpha[..., None] + background.astype(np.float32) * (1.0 - alpha[..., None])
    return rgb.astype(np.float32), np.ascontiguousarray(alpha)


def read_mask(path: Path, field_name: str | None = None) -> np.ndarray:
    """A mask image (white = subject) as (H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    im = open_image(path, field_name, "mask")
    try:
        with im:
            im.load()
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SourceError(path, f"unreadable mask ({_one_line(exc)})", field_name) from None


def time_problems(times) -> list[str]:
    """Soft warnings about the spread of a source's times."""
    times = np.asarray(times, dtype=np.float64)
    distinct = len(np.unique(np.round(times, 6)))
    if len(times) > 1 and distinct == 1:
        return [f"all frames share one time ({times[0]:.4f}): a static capture, no time pairs"]
    if distinct < FEW_DISTINCT_TIMES:
        return [f"only {distinct} distinct times: time pairs will be coarse"]
    return []


class FrameCache:
    """The last `capacity` decoded frames, least recently used dropped first."""

    def __init__(self, capacity: int):
        if int(capacity) < 0:
            raise ValueError(f"cache_size must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._items: OrderedDict[int, Frame] = OrderedDict()

    def get(self, index: int) -> Frame | None:
        item = self._items.get(index)
        if item is not None:
            self._items.move_to_end(index)
        return item

    def put(self, index: int, frame: Frame) -> None:
        if self.capacity == 0:
            return
        self._items[index] = frame
        self._items.move_to_end(index)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _copy(frame: Frame) -> Frame:
    return Frame(
        rgb=frame.rgb.copy(),
        time01=frame.time01,
        camera=frame.camera,
        mask=None if frame.mask is None else frame.mask.copy(),
        depth=None if frame.depth is None else frame.depth.copy(),
    )


class ImageListSource(Source):
    """A discrete source whose frames are image files, listed at open and decoded on demand.

    Subclasses parse their own index (a folder listing, a transforms JSON) and call
    `_set_frames`. Decoded frames are kept in a small LRU cache; callers get copies.
    """

    def __init__(self, background=(1.0, 1.0, 1.0), cache_size: int = 64):
        self.background = check_background(background)
        self._cache = FrameCache(cache_size)
        self._infos: list[FrameInfo] = []
        self._fields: list[str | None] = []
        self._masks: list[Path | None] = []
        self._size = (0, 0)

    def _set_frames(self, infos: list[FrameInfo], size: tuple[int, int], fields=None, masks=None) -> None:
        """infos: the held frames (each with its image `file`); size: (width, height) of all."""
        self._infos = list(infos)
        self._size = (int(size[0]), int(size[1]))
        self._fields = list(fields) if fields is not None else [None] * len(self._infos)
        self._masks = list(masks) if masks is not None else [None] * len(self._infos)

    def infos(self) -> list[FrameInfo]:
        return self._infos

    def verify_images(self) -> int:
        """Decode every image (and mask) file once, so damage past the header (a truncated
        PNG) is found now rather than mid-training; SourceError naming the first damaged file.
        Returns how many files were decoded."""
        count = 0
        for info, field_name, mask in zip(self._infos, self._fields, self._masks):
            decode_check(Path(info.file), field_name)
            count += 1
            if mask is not None:
                decode_check(mask, field_name.replace("file_path", "mask_path") if field_name else None)
                count += 1
        return count

    @property
    def resolution(self) -> tuple[int, int]:
        return self._size

    def frame(self, index: int) -> Frame:
        n = len(self._infos)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: frame {index} out of range (the source holds {n})")
        index %= n
        cached = self._cache.get(index)
        if cached is None:
            info = self._infos[index]
            field_name = self._fields[index]
            rgb, mask = read_image(Path(info.file), self.background, field_name)
            if self._masks[index] is not None:  # sizes were checked against the image at open
                mask_field = field_name.replace("file_path", "mask_path") if field_name else None
                mask = read_mask(self._masks[index], mask_field)
            cached = Frame(rgb=rgb, time01=info.time01, camera=info.camera, mask=mask)
            self._cache.put(index, cached)
        return _copy(cached)

