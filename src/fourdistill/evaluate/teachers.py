"""Held-out scores of the multi-view and video teachers, read by the world's judge and reader.

Multi-view (`evaluate_multiview`, held-out EVAL_SEEDS captions and cameras): 4-view samples
from the caption at 4 cameras 90 degrees apart with a random offset and elevation. The reader
reads each view's azimuth: a set is in order when each next view reads 90 +- 15 degrees
further round (counter-clockwise, as the cameras turn). The judge reads each view's objects: a
set is right when every view shows the caption's objects (exact); the per-view exact rate is
the image stack's text-to-image score measured on views. The same scores of the world's own
renders at those cameras ("truth/...") are this reader's and judge's ceiling.
"""

from __future__ import annotations

import numpy as np
import torch

from ..teachers.multiview.model import NUM_VIEWS

ORDER_TOLERANCE_DEG = 15.0  # a set is in order when each step reads 90 +- 15 degrees


def evaluation_cameras(n_scenes: int, resolution: int, seed: int = 0, n_views: int = NUM_VIEWS):
    """Held-out view sets: (cameras (n, V, 4, 4) float32, azimuth_deg (n, V), Camera lists)."""
    from ..teachers.data import view_set_cameras

    rng = np.random.default_rng([seed, 0xE7A1])
    cams, azimuths = [], []
    for _ in range(n_scenes):
        c, az, _ = view_set_cameras(rng, n_views, resolution)
        cams.append(c)
        azimuths.append(az)
    c2w = np.stack([[c.c2w for c in row] for row in cams]).astype(np.float32)
    return c2w, np.stack(azimuths), cams


def view_order_ok(azimuth_deg: torch.Tensor, tolerance: float = ORDER_TOLERANCE_DEG) -> torch.Tensor:
    """(B, V) read azimuths -> (B,) bool: each next view reads 360 / V +- tolerance degrees further
    counter-clockwise."""
    from .reader import wrap_deg

    step = 360.0 / azimuth_deg.shape[1]
    diffs = wrap_deg(azimuth_deg[:, 1:] - azimuth_deg[:, :-1])
    return ((diffs - step).abs() <= tolerance).all(dim=1)


def score_view_sets(images: torch.Tensor, scenes, reader=None, judge=None) -> dict:
    """Reader order and judge objects of view sets (B, V, H, W, 3) in [0, 1] of `scenes`."""
    from .judge import load_judge, scene_labels, score_labels
    from .reader import load_reader, wrap_deg

    reader = reader or load_reader()
    judge = judge or load_judge()
    b, v = images.shape[:2]
    flat = images.flatten(0, 1).permute(0, 3, 1, 2).contiguous()
    azimuth = reader.read_pose(flat)["azimuth_deg"].reshape(b, v)
    order = view_order_ok(azimuth)
    step = 360.0 / v
    step_error = (wrap_deg(azimuth[:, 1:] - azimuth[:, :-1]) - step).abs()
    labels = judge.labels(flat)
    truth = np.repeat(np.stack([scene_labels(s, judge.config) for s in scenes]), v, axis=0)
    per_view = score_labels(labels, truth)
    exact_views = torch.tensor([bool(np.all((labels[i].numpy() == truth[i]) | (truth[i] < 0))) for i in range(b * v)]).reshape(b, v)
    return {
        "view_order_accuracy": float(order.float().mean()),
        "median_step_error_deg": float(step_error.median()),
        "objects_every_view": float(exact_views.all(dim=1).float().mean()),
        "objects_per_view_exact": per_view.exact,
        "objects_per_view_recall": per_view.object_recall,
        "sets": int(b),
    }


def evaluate_multiview(teacher, n_scenes: int = 32, seed: int = 0, steps=None, guidance=None, reader=None, judge=None,
                       samples_path=None, true_renders: bool = True) -> dict:
    """The held-out scores of a MultiViewTeacher on the first `n_scenes` EVAL_SEEDS captions (see
    the module docstring); with true_renders the same scores of the world's own renders at those
    cameras and times (what a perfect teacher would score with this reader and judge), keyed
    "truth/...". samples_path: also write a PNG grid (one row per set: truth, sample)."""
    from .judge import load_judge
    from .reader import load_reader
    from ..world import EVAL_SEEDS, make_scene
    from ..world.render import render_views

    reader = reader or load_reader()
    judge = judge or load_judge()
    scenes = [make_scene(s) for s in EVAL_SEEDS[:n_scenes]]
    resolution = teacher.parts.resolution
    c2w, _, cams = evaluation_cameras(n_scenes, resolution, seed, teacher.num_views)
    from ..teachers.multiview.train import sample_views

    images = sample_views(teacher, [s.caption for s in scenes], c2w, steps, guidance, seed=seed)
    out = score_view_sets(images, scenes, reader, judge)
    truth = None
    if true_renders or samples_path is not None:
        times = np.random.default_rng([seed, 0xE7A2]).uniform(0, 1, n_scenes)
        truth = torch.from_numpy(np.stack([render_views(s, row, np.full(len(row), t))["rgb"] for s, row, t in zip(scenes, cams, times)])).float()
    if true_renders:
        out.update({f"truth/{k}": v for k, v in score_view_sets(truth, scenes, reader, judge).items() if k != "sets"})
    if samples_path is not None:
        from ..io import image_grid, save_image

        rows = torch.cat([truth, images], dim=1).flatten(0, 1).numpy()
        save_image(samples_path, image_grid(rows, rows=len(images)))
    return out


def score_teacher(teacher_folder, cfg) -> dict:
    """The held-out scores the trainer writes into a finished teacher's card (teachers.finetune)."""
    from ..teachers.load import load_teacher

    if cfg.kind == "multiview":
        return evaluate_multiview(load_teacher("multiview", teacher_folder), cfg.eval_scenes, seed=cfg.seed)
    return evaluate_video(load_teacher("video", teacher_folder), cfg.eval_scenes, seed=cfg.seed)
