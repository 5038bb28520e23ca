"""The 4D-fy recipe: a 4D field from a caption by hybrid score distillation.

4D-fy (Bahmani et al. 2024, "4D-fy: Text-to-4D Generation Using Hybrid Score Distillation
Sampling") optimises one 4D hash-grid field in three stages, drawing one teacher per iteration:

| stage | what trains | P(multi-view) | P(image) | P(video) |
|---|---|---|---|---|
| 1 static | static grid + MLPs | 1.0 | 0 | 0 |
| 2 static | static grid + MLPs | 0.5 | 0.5 | 0 |
| 3 dynamic | everything; the dynamic grid only in video steps | 0.5 | 0.25 | 0.25 |

A multi-view step renders 4 views 90 degrees apart (one random offset, elevation, radius, fov)
at one time; an image step one view; a video step T frames of one camera at t_k = t0 + k / T,
t0 ~ U(0, 1 / T). Each stage's step counter is its own and is saved; the timestep ranges of each
teacher anneal over the stage's own steps (the guidance configs hold them as data).
Regularisers: a sparsity term on the rendered opacity and an opacity-entropy term after a start
step (4D-fy: weights 10 and 1000 after step 10,000 at 256^2; ours are configured per preset).
Learning rates per parameter group per stage (4D-fy: grids 1e-2, MLPs 1e-3; in stage 3 the
static grid 1e-4 and the dynamic grid 1e-2).

`TextTo4DConfig` holds everything (configs/text_to_4d/*.yaml are the presets); `generate_4d`
is the loop on the engine: OUT/config.json, OUT/log.jsonl (+ TensorBoard) with each teacher's
loss, OUT/checkpoint (a field checkpoint, field/checkpoint.py, so `inspect` and `distill --source`
read it; with the optimizer, stage and step for an exact --resume), previews every
`preview_every` steps, and at the end an orbit video at several times and a time x view grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TEACHERS = ("multiview", "image", "video")


@dataclass
class StageConfig:
    """One stage of the recipe: its steps, the teacher probabilities, what trains and how fast."""

    name: str
    steps: int
    p_multiview: float
    p_image: float
    p_video: float
    dynamic: bool = False  # the dynamic grid trains (in video steps only, as 4D-fy)
    lr_static_grid: float = 1e-2  # 4D-fy: grids 1e-2 (stage 3: the static grid 1e-4)
    lr_dynamic_grid: float = 1e-2
    lr_mlp: float = 1e-3  # 4D-fy: MLPs 1e-3

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps must be >= 0, got {self.steps}")
        probs = (self.p_multiview, self.p_image, self.p_video)
        if any(p < 0 or p > 1 for p in probs):
            raise ValueError(f"stage {self.name!r}: probabilities must lie in [0, 1], got {probs}")
        if abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"stage {self.name!r}: p_multiview + p_image + p_video = {sum(probs):.4g}, not 1")
        if self.p_video > 0 and not self.dynamic:
            raise ValueError(f"stage {self.name!r}: video steps need dynamic: true (the video teacher trains the dynamic grid)")

    def probabilities(self) -> np.ndarray:
        return np.array([self.p_multiview, self.p_image, self.p_video])


def embedded_stages() -> list[StageConfig]:
    """The embedded preset's stages (configs/text_to_4d/embedded.yaml): 4D-fy's probabilities with
    900 steps instead of 135,000, and learning rates 3x (grids) and 10x (MLPs) 4D-fy's, so a
    scene forms in that budget (at 4D-fy's rates 500 steps left a blur; docs/results)."""
    return [
        StageConfig("static", 300, 1.0, 0.0, 0.0, lr_static_grid=3e-2, lr_dynamic_grid=3e-2, lr_mlp=1e-2),
        StageConfig("static_hybrid", 200, 0.5, 0.5, 0.0, lr_static_grid=3e-2, lr_dynamic_grid=3e-2, lr_mlp=1e-2),
        StageConfig("dynamic", 400, 0.5, 0.25, 0.25, dynamic=True, lr_static_grid=3e-3, lr_dynamic_grid=3e-2, lr_mlp=1e-2),
    ]


@dataclass
class CameraConfig:
    """Random training cameras (4D-fy: elevation 0..30, azimuth -180..180, radius 2.5..3.0,
    fov 15..60 degrees; the embedded preset uses the world's orbit, where its teachers learned)."""

    elevation_deg: tuple[float, float] = (10.0, 40.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    radius: tuple[float, float] = (3.0, 3.4)
    fov_deg: tuple[float, float] = (40.0, 40.0)

    def __post_init__(self):
        for name in ("elevation_deg", "azimuth_deg", "radius", "fov_deg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"camera.{name}: the range {lo}..{hi} is empty")
        if self.radius[0] <= 0 or not 0 < self.fov_deg[0] < 180:
            raise ValueError("camera: radius must be > 0 and fov in (0, 180) degrees")


def sample_cameras(cam: CameraConfig, rng: np.random.Generator, n_views: int, resolution: int):
    """n_views cameras looking at the origin, azimuths 360 / n_views apart from one random
    offset, one elevation, radius and fov (4D-fy's multi-view batch; n_views 1: one view)."""
    from ..cameras import orbit_camera

    offset = rng.uniform(*cam.azimuth_deg)
    elevation = rng.uniform(*cam.elevation_deg)
    radius = rng.uniform(*cam.radius)
    fov = rng.uniform(*cam.fov_deg)
    return [orbit_camera(offset + 360.0 * k / n_views, elevation, radius, fov, resolution, resolution, (0.0, 0.0, 0.0))
            for k in range(n_views)]


@dataclass
class Regularisers:
    """Weights of the field's regularisers (4D-fy: sparsity 10; opacity entropy 1000 after
    step 10,000)."""

    sparsity: float = 0.0  # mean rendered opacity
    opacity_entropy: float = 0.0  # binary entropy of the rendered opacity, pushes it to 0 or 1
    entropy_start: int = 0  # global step the entropy term starts at


def regulariser_losses(opacity: torch.Tensor, reg: Regularisers, step: int) -> dict[str, torch.Tensor]:
    """{"sparsity", "opacity_entropy"} of rendered opacity (N, H, W) (terms with weight 0 left out)."""
    out = {}
    if reg.sparsity > 0:
        out["sparsity"] = reg.sparsity * opacity.mean()
    if reg.opacity_entropy > 0 and step >= reg.entropy_start:
        a = opacity.clamp(1e-5, 1 - 1e-5)
        out["opacity_entropy"] = reg.opacity_entropy * (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
    return out


def stage_at(stages: list[StageConfig], step: int) -> tuple[int, int]:
    """(stage index, step inside that stage) of global `step` (0-based); past the end: the last
    stage's end."""
    start = 0
    for i, s in enumerate(stages):
        if step < start + s.steps:
            return i, step - start
        start += s.steps
    return len(stages) - 1, stages[-1].steps


def draw_teacher(stage: StageConfig, rng: np.random.Generator) -> str:
    """One teacher for this iteration by the stage's probabilities."""
    return TEACHERS[int(rng.choice(3, p=stage.probabilities() / stage.probabilities().sum()))]


def set_stage(field, optimizer, stage: StageConfig, teacher: str) -> None:
    """Freeze or train the dynamic grid for this step (trained only in video steps of a dynamic
    stage) and set the stage's learning rates on the optimizer's groups."""
    field.freeze_dynamic(not (stage.dynamic and teacher == "video"))
    rates = {"static_grid": stage.lr_static_grid, "dynamic_grid": stage.lr_dynamic_grid, "mlp": stage.lr_mlp}
    for group in optimizer.param_groups:
        group["lr"] = rates[group["name"]]


def field_optimizer(field) -> torch.optim.Optimizer:
    """AdamW with one group per parameter role (static_grid, dynamic_grid, mlp), no weight decay on
    the grids (4D-fy's optimizer groups); betas (0.9, 0.99) as Instant-NGP."""
    groups = [{"params": p, "name": name, "lr": 1e-2, "weight_decay": 0.0}
              for name, p in field.parameter_groups().items() if p]
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-15)


def total_steps(stages: list[StageConfig]) -> int:
    return int(sum(s.steps for s in stages))
