"""Held-out scores of the multi-view and video teachers, read by the world's judge and reader.

Multi-view (`evaluate_multiview`, held-out EVAL_SEEDS captions and cameras): 4-view samples
from the caption at 4 cameras 90 degrees apart with a random offset and elevation. The reader
reads each view's azimuth: a set is in order when each next view reads 90 +- 15 degrees
further round (counter-clockwise, as the cameras turn). The judge reads each view's objects: a
set is right when every view shows the caption's objects (exact); the per-view exact rate is
the image stack's text-to-image score measured on views. The same scores of the world's own
renders at those cameras ("truth/...") are this reader's and judge's ceiling.

Video (`evaluate_video`, held-out captions): one clip per caption. The reader reads each clip's
motions: a clip's motion is right when every caption object is read with its caption motion
("motion_accuracy"; "motion_per_object" counts objects); its direction is right when the reader
reads it playing forward ("direction_accuracy"; scored on clips with a bounce or an orbit,
the motions that show which way time runs: a spin or a slide runs either way, and a grow played
backwards is a shrink, which the motion label already scores). The judge reads each frame's objects: a clip is right when every frame shows
exactly the caption's objects ("objects_every_frame"). "truth/...": the same scores of the
world's own clips of those scenes at held-out cameras and start times.
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


def score_clips(clips: torch.Tensor, scenes, reader=None, judge=None) -> dict:
    """Reader motions and direction, judge objects of clips (B, T, H, W, 3) in [0, 1] of `scenes`."""
    from .judge import load_judge, scene_labels
    from .reader import ABSENT, load_reader, scene_motion_labels

    reader = reader or load_reader()
    judge = judge or load_judge()
    b, t = clips.shape[:2]
    read = reader.read_clip(clips.permute(0, 1, 4, 2, 3).contiguous())
    labels = read["motion_labels"].numpy()
    truth = np.stack([scene_motion_labels(s, reader.config) for s in scenes])
    present = truth != ABSENT
    right = (labels == truth) | ~present
    directional = np.array([any(o.motion in ("bounce", "orbit") for o in s.objects) for s in scenes])
    forward = read["p_forward"].numpy() > 0.5
    frames = clips.flatten(0, 1).permute(0, 3, 1, 2).contiguous()
    objects = judge.labels(frames).numpy().reshape(b, t, -1)
    object_truth = np.stack([scene_labels(s, judge.config) for s in scenes])
    every_frame = np.all(objects == object_truth[:, None], axis=(1, 2))
    return {
        "motion_accuracy": float(right.all(axis=1).mean()),
        "motion_per_object": float(right[present].mean()),
        "direction_accuracy": float(forward[directional].mean()) if directional.any() else float("nan"),
        "directional_clips": int(directional.sum()),
        "objects_every_frame": float(every_frame.mean()),
        "clips": int(b),
    }


def evaluate_video(teacher, n_scenes: int = 32, seed: int = 0, steps=None, guidance=None, reader=None, judge=None,
                   true_renders: bool = True, samples_path=None) -> dict:
    """The held-out scores of a video teacher on the first `n_scenes` EVAL_SEEDS captions (see the
    module docstring), with the true clips' scores as "truth/..."; samples_path: also write the
    sampled clips (an mp4 or gif, side by side)."""
    from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from ..teachers.data import clip_times
    from ..teachers.video.sample import sample_clips, write_clips
    from ..world import DEFAULT_ORBIT, EVAL_SEEDS, make_scene
    from ..world.render import render_views
    from .judge import load_judge
    from .reader import load_reader

    reader = reader or load_reader()
    judge = judge or load_judge()
    scenes = [make_scene(s) for s in EVAL_SEEDS[:n_scenes]]
    frames = max(int(teacher.num_frames), reader.config.clip_frames)
    clips = sample_clips(teacher, [s.caption for s in scenes], frames, steps or DEFAULT_STEPS,
                         DEFAULT_GUIDANCE if guidance is None else guidance, seed=seed)
    out = score_clips(clips, scenes, reader, judge)
    if true_renders:
        rng = np.random.default_rng([seed, 0xE7A3])
        res = teacher.resolution
        truth = []
        for s in scenes:
            cam = DEFAULT_ORBIT.sample(rng, res, res)
            truth.append(render_views(s, [cam] * frames, clip_times(rng, frames))["rgb"])
        out.update({f"truth/{k}": v for k, v in score_clips(torch.from_numpy(np.stack(truth)).float(), scenes, reader, judge).items()
                    if k not in ("clips", "directional_clips")})
    if samples_path is not None:
        write_clips(samples_path, clips)
    return out


def score_teacher(teacher_folder, cfg) -> dict:
    """The held-out scores the trainer writes into a finished teacher's card (teachers.finetune)."""
    from ..teachers.load import load_teacher

    if cfg.kind == "multiview":
        return evaluate_multiview(load_teacher("multiview", teacher_folder), cfg.eval_scenes, seed=cfg.seed)
    return evaluate_video(load_teacher("video", teacher_folder), cfg.eval_scenes, seed=cfg.seed)
