"""Which procedural world scene a source path shows, and the refusal to train on a held-out one.

Seeds 1000000..1000999 (`fourdistill.world.EVAL_SEEDS`) are held out for evaluation. Data of
one of them reaches a trainer by three paths, each of which names its seed on disk:

    world:SEED          the spec itself
    a D-NeRF export     its scene.json, written by `fourdistill world export` ({"seed": ...})
    a fitted field      its field.json: "world_seed" (what reconstruction records from its
                        source), or "source" = "world:SEED"

`world_seed_of(path)` reads that seed without opening the source (cheap: small JSON files);
`check_train_source(path, flag)` raises SourceError naming the path, the seed and the flag
when the seed is held out. The trainers' commands call it before any work starts, so nothing
is written for a refused source. A path that names no seed is not checked further: data
from outside the world cannot leak the world's held-out scenes.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import SourceError

SCENE_FILE = "scene.json"  # written beside a D-NeRF export by fourdistill.world.export
FIELD_META = "field.json"  # fourdistill.field.META_NAME (tests check the two agree)


def _json_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing or unreadable (the source's
    reader reports a damaged file when the source is opened)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _seed(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.startswith("world:"):
        try:
            return int(value.split(":", 1)[1])
        except ValueError:
            return None
    return None


def scene_seed(folder) -> int | None:
    """The seed a D-NeRF export's scene.json names, or None."""
    data = _json_object(Path(folder) / SCENE_FILE)
    return _seed(data.get("seed")) if data else None


def world_seed_of(path) -> int | None:
    """The world scene a source path shows (see the module docstring), or None."""
    if isinstance(path, str) and path.startswith("world:"):
        return _seed(path)
    path = Path(path)
    folder = path.parent if path.is_file() else path
    for candidate in (folder, folder / "checkpoint"):
        meta = _json_object(candidate / FIELD_META)
        if meta is not None:
            seed = _seed(meta.get("world_seed"))
            return seed if seed is not None else _seed(meta.get("source"))
    return scene_seed(folder)


def check_train_source(path, flag: str = "--source") -> None:
    """SourceError when `path` shows a world scene held out for evaluation."""
    from ..world.scene import EVAL_SEEDS, TRAIN_SEEDS

    seed = world_seed_of(path)
    if seed is not None and seed in EVAL_SEEDS:
        if isinstance(path, str) and path.startswith("world:"):
            what = "is"
        elif _json_object(Path(path) / SCENE_FILE) is not None or _json_object(Path(path).parent / SCENE_FILE) is not None:
            what = "is an export of"
        else:
            what = "is a field fitted to"
        raise SourceError(
            path,
            f"{flag} {what} world scene {seed}, held out for evaluation (seeds {EVAL_SEEDS.start}..{EVAL_SEEDS.stop - 1}) "
            f"and never trained on; train on training scenes (seeds {TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}) only",
        )
