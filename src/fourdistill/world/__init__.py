"""The tiny 4D world: procedural scenes with exact ground truth (the embedded default)."""

from .scene import (
    COLORS,
    DEFAULT_ORBIT,
    EVAL_SEEDS,
    GROUND_Z,
    MOTIONS,
    SHAPES,
    TRAIN_SEEDS,
    Scene,
    WorldConfig,
    WorldObject,
    check_train_seeds,
    is_eval_seed,
    make_scene,
)
from .render import object_mask, render_view, render_views


def __getattr__(name):  # exporters pull in imaging libraries: load them on first use
    if name in ("export_dnerf", "export_video", "orbit_path"):
        from . import export

        return getattr(export, name)
    raise AttributeError(name)


__all__ = [
    "COLORS",
    "DEFAULT_ORBIT",
    "EVAL_SEEDS",
    "GROUND_Z",
    "MOTIONS",
    "SHAPES",
    "TRAIN_SEEDS",
    "Scene",
    "WorldConfig",
    "WorldObject",
    "check_train_seeds",
    "is_eval_seed",
    "make_scene",
    "object_mask",
    "render_view",
    "render_views",
    "export_dnerf",
    "export_video",
    "orbit_path",
]
