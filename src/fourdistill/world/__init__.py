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
from .export import export_dnerf, export_video, orbit_path


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
