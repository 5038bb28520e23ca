"""Scoring a generated 4D scene against its caption with the world's judge and reader.

The captions are those of held-out world scenes (EVAL_SEEDS), so every caption has a true scene:
its objects (shape, colour) and each object's motion. A generated field is rendered on an
evaluation orbit (4D-fy's: elevation 15 degrees, radius 3, fov 40) at several times, and read:

- object accuracy: the judge reads exactly the caption's objects (every shape right: absent, or
  present in the right colour) in a view; the fraction over views x times;
- motion accuracy: clips of `clip_frames` frames over t in [0, 1] at fixed cameras; the reader's
  motion label of each caption object; the fraction over objects x cameras (a static scene reads
  "still" at best, 1 of the world's motions);
- 3D consistency: the reader's azimuths of neighbouring orbit views differ by the asked step
  (360 / n_views) within 15 degrees; the fraction of neighbour pairs;
- R-precision: among `r_captions` held-out captions (the scene's own and others), is the scene's
  own the best match of what was read (the judge's majority labels over views and the reader's
  majority motions)? A tie with another caption counts as a miss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

EVAL_ELEVATION_DEG = 15.0  # 4D-fy's evaluation orbit
EVAL_RADIUS = 3.0
EVAL_FOV_DEG = 40.0
CONSISTENCY_TOLERANCE_DEG = 15.0


@dataclass
class SceneReading:
    """What the judge and reader read of one generated scene, and how it scores."""

    object_accuracy: float
    motion_accuracy: float
    consistency: float
    judge_labels: list[int]  # majority over views and times, (S,)
    motion_labels: list[int]  # majority over cameras, (n_shapes,)


def orbit_cameras(n_views: int, resolution: int, elevation=EVAL_ELEVATION_DEG, radius=EVAL_RADIUS, fov=EVAL_FOV_DEG, offset=0.0):
    from ..cameras import orbit_camera

    return [orbit_camera(offset + 360.0 * k / n_views, elevation, radius, fov, resolution, resolution, (0.0, 0.0, 0.0))
            for k in range(n_views)]


def _majority(labels: np.ndarray) -> np.ndarray:
    """Per column, the most frequent value (ties: the smallest)."""
    return np.array([np.bincount(col - col.min()).argmax() + col.min() for col in labels.T], dtype=np.int64)


@torch.no_grad()
def read_scene(render, scene, judge=None, reader=None, n_views: int = 8, times=(0.0, 0.33, 0.67, 1.0),
               motion_cameras: int = 4, resolution: int = 64) -> SceneReading:
    """Score one generated scene. render(cameras, times) -> (N, H, W, 3) float images in [0, 1]
    (a field's renderer; the world's own renderer gives the ceiling). `scene` is the caption's
    true scene."""
    from .judge import load_judge, scene_labels
    from .reader import ABSENT, load_reader, scene_motion_labels, wrap_deg

    judge = judge or load_judge()
    reader = reader or load_reader()
    cams = orbit_cameras(n_views, resolution)
    views = []
    for t in times:
        views.append(torch.as_tensor(render(cams, [float(t)] * n_views)).float())
    views = torch.stack(views)  # (T, V, H, W, 3)
    flat = views.flatten(0, 1).permute(0, 3, 1, 2).contiguous()
    truth = scene_labels(scene, judge.config)
    labels = judge.labels(flat).numpy()
    object_accuracy = float(np.mean(np.all(labels == truth[None], axis=1)))
    azimuth = reader.read_pose(flat)["azimuth_deg"].reshape(len(times), n_views)
    step = 360.0 / n_views
    diffs = wrap_deg(torch.roll(azimuth, -1, dims=1) - azimuth)
    consistency = float(((diffs - step).abs() <= CONSISTENCY_TOLERANCE_DEG).float().mean())
    n_frames = reader.config.clip_frames
    clip_times = np.linspace(0.0, 1.0, n_frames)
    clips = []
    for cam in orbit_cameras(motion_cameras, resolution, offset=45.0):
        clips.append(torch.as_tensor(render([cam] * n_frames, list(clip_times))).float())
    clips = torch.stack(clips).permute(0, 1, 4, 2, 3).contiguous()  # (C, T, 3, H, W)
    motions = reader.read_clip(clips)["motion_labels"].numpy()  # (C, n_shapes)
    motion_truth = scene_motion_labels(scene, reader.config)
    present = motion_truth != ABSENT
    motion_accuracy = float(np.mean(motions[:, present] == motion_truth[present][None])) if present.any() else float("nan")
    return SceneReading(object_accuracy, motion_accuracy, consistency, _majority(labels).tolist(), _majority(motions).tolist())


def match_score(reading: SceneReading, scene, judge_config, reader_config) -> int:
    """How many of a caption's facts a reading matches: the judge's label of every shape, the
    reader's motion of every shape."""
    from .judge import scene_labels
    from .reader import scene_motion_labels

    a = int(np.sum(np.asarray(reading.judge_labels) == scene_labels(scene, judge_config)))
    b = int(np.sum(np.asarray(reading.motion_labels) == scene_motion_labels(scene, reader_config)))
    return a + b


def r_precision(readings: list[SceneReading], scenes: list, pool: list, judge_config, reader_config) -> float:
    """Fraction of readings whose own scene's caption (scenes[i], which is also in `pool`) scores
    strictly better than every other caption of `pool`."""
    hits = []
    for reading, scene in zip(readings, scenes):
        own = match_score(reading, scene, judge_config, reader_config)
        others = [match_score(reading, s, judge_config, reader_config) for s in pool if s.seed != scene.seed]
        hits.append(own > max(others) if others else True)
    return float(np.mean(hits)) if hits else float("nan")


def summary(readings: list[SceneReading]) -> dict:
    keys = ("object_accuracy", "motion_accuracy", "consistency")
    return {k: float(np.nanmean([asdict(r)[k] for r in readings])) for k in keys}


def world_renderer(scene):
    """render(cameras, times) of the world's own scene: the true renders (the scorers' ceiling)."""
    from ..world.render import render_views

    return lambda cams, times: render_views(scene, cams, np.asarray(times))["rgb"]


def field_renderer(field, grid, render_cfg):
    """render(cameras, times) of a field (no autograd)."""
    from ..field.render import render_cameras

    def render(cams, times):
        return render_cameras(field, grid, cams, list(times), render_cfg, requires_grad=False)["rgb"].cpu()

    return render


# ----------------------------------------------------------------------------- ablations
VARIANTS = ("full", "no-multiview", "no-video", "image-only")


def variant_config(cfg, variant: str):
    """The recipe without a teacher, as 4D-fy's ablations: the removed teacher's probability goes to
    the image teacher in every stage (no-video keeps the dynamic stage, whose motion then has no
    teacher; image-only draws the image teacher alone)."""
    import copy

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    cfg = copy.deepcopy(cfg)
    for s in cfg.stages:
        if variant in ("no-multiview", "image-only"):
            s.p_image, s.p_multiview = s.p_image + s.p_multiview, 0.0
        if variant in ("no-video", "image-only"):
            s.p_image, s.p_video = s.p_image + s.p_video, 0.0
    return cfg


def run_is_finished(run) -> bool:
    """Whether a text-to-4d run folder holds its final field (grid.png is written last)."""
    from pathlib import Path

    return (Path(run) / "grid.png").is_file() and (Path(run) / "checkpoint" / "field.json").is_file()


def evaluate_text_to_4d(out, cfg, n_captions: int = 4, variants=VARIANTS, pool_size: int = 20, seed: int = 0,
                        progress: bool = True, judge=None, reader=None) -> dict:
    """Generate a scene for each of the first `n_captions` held-out captions with each variant of
    the recipe (OUT/runs/<variant>/<k>; finished runs are kept and read again, unfinished ones
    resumed), score each (read_scene) and the R-precision among `pool_size` held-out captions;
    the world's own scenes are scored as the ceiling ("truth"). Returns the report dict (also
    OUT/report.json, OUT/report.md)."""
    from pathlib import Path

    from ..field.checkpoint import load_checkpoint
    from ..io import write_json
    from ..sds.text_to_4d import generate_4d
    from ..world import EVAL_SEEDS, make_scene
    from .judge import load_judge
    from .reader import load_reader

    out = Path(out)
    judge = judge or load_judge()
    reader = reader or load_reader()
    pool = [make_scene(s) for s in EVAL_SEEDS[: max(pool_size, n_captions)]]
    scenes = pool[:n_captions]
    report = {"captions": [s.caption for s in scenes], "seeds": [int(s.seed) for s in scenes], "pool": len(pool), "variants": {}}
    truth = [read_scene(world_renderer(s), s, judge, reader) for s in scenes]
    report["truth"] = {**summary(truth), "r_precision": r_precision(truth, scenes, pool, judge.config, reader.config)}
    for variant in variants:
        readings, walls = [], []
        for k, scene in enumerate(scenes):
            run = out / "runs" / variant / f"{k:02d}"
            vcfg = variant_config(cfg, variant)  # a copy
            vcfg.caption, vcfg.seed = scene.caption, seed + k
            if not run_is_finished(run):
                resume = (run / "config.json").is_file()
                generate_4d(run, vcfg, resume=resume, progress=progress)
            field, grid, meta = load_checkpoint(run / "checkpoint")
            walls.append(float(meta.get("wall_s", 0.0)))
            readings.append(read_scene(field_renderer(field, grid, meta["render_config"]), scene, judge, reader))
        rows = {**summary(readings), "r_precision": r_precision(readings, scenes, pool, judge.config, reader.config),
                "wall_min_per_scene": float(np.mean(walls)) / 60.0,
                "per_caption": [asdict(r) for r in readings]}
        report["variants"][variant] = rows
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict) -> str:
    lines = [f"Held-out captions: {len(report['captions'])} (R-precision among {report['pool']}).", "",
             "| variant | object accuracy | motion accuracy | 3D consistency | R-precision | minutes per scene |",
             "|---|---|---|---|---|---|"]
    for name, row in report["variants"].items():
        lines.append(f"| {name} | {row['object_accuracy']:.3f} | {row['motion_accuracy']:.3f} | {row['consistency']:.3f} | "
                     f"{row['r_precision']:.3f} | {row['wall_min_per_scene']:.1f} |")
    t = report["truth"]
    lines.append(f"| the world's own scenes (ceiling) | {t['object_accuracy']:.3f} | {t['motion_accuracy']:.3f} | "
                 f"{t['consistency']:.3f} | {t['r_precision']:.3f} | |")
    lines += ["", "Captions:"] + [f"- {c}" for c in report["captions"]]
    return "\n".join(lines) + "\n"
