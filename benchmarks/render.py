"""Rays per second of the field renderer with and without occupancy skipping, on a fitted scene.

Run: python benchmarks/render.py --run OUT        (a `fourdistill reconstruct` run folder)
     python benchmarks/render.py                  (fits a held-out world scene first, ~minutes)
Prints one table measured in one run: rays/s, field samples per ray and the largest pixel
difference from the render without skipping. The ratio between the rows is what to compare
(absolute rates drift with the machine's load). Both rows stop rays early (transmittance
below 1e-4); only the occupancy grid differs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def fit_scene(folder: Path, steps: int, seed: int) -> Path:
    from fourdistill.field.reconstruct import ReconstructConfig, open_for_reconstruction, reconstruct
    from fourdistill.world import EVAL_SEEDS, export_dnerf, make_scene

    data = folder / "dnerf"
    export_dnerf(make_scene(EVAL_SEEDS[seed]), data, resolution=64, n_train=50, n_val=0, n_test=0)
    train, ti, _, _ = open_for_reconstruction(data)
    cfg = ReconstructConfig(steps=steps, eval_every=0, checkpoint_every=0)
    reconstruct(train, folder / "run", cfg, ti, write_video=False)
    return folder / "run"


def measure(field, grid, cameras, times, render, seconds: float) -> tuple[float, float, torch.Tensor]:
    """(rays per second, samples per ray, last images (N, H, W, 3))."""
    from fourdistill.field.render import render_image

    rays = samples = 0
    images = None
    start = time.perf_counter()
    while images is None or time.perf_counter() - start < seconds:
        outs = [render_image(field, c, t, render, grid) for c, t in zip(cameras, times)]
        rays += sum(c.width * c.height for c in cameras)
        samples += sum(o["samples"] for o in outs)
        images = torch.stack([o["rgb"] for o in outs])
    return rays / (time.perf_counter() - start), samples / rays, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="reconstruct run folder or checkpoint (default: fit one first)")
    parser.add_argument("--fit-steps", type=int, default=1500, help="steps when fitting a scene first (default 1500)")
    parser.add_argument("--seed-index", type=int, default=3, help="which evaluation seed to fit (default 3)")
    parser.add_argument("--views", type=int, default=8, help="cameras on the orbit (default 8)")
    parser.add_argument("--resolution", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5)")
    args = parser.parse_args()

    from fourdistill.cameras import orbit_camera
    from fourdistill.field.reconstruct import load_checkpoint, orbit_from_dict

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else fit_scene(Path(tmp), args.fit_steps, args.seed_index)
        field, grid, meta = load_checkpoint(run)
    render = meta["render_config"]
    orbit = orbit_from_dict(meta["orbit"])
    el, r = float(np.mean(orbit.elevation_deg)), float(np.mean(orbit.radius))
    azimuths = np.linspace(-180.0, 180.0, args.views, endpoint=False) + 10.0
    cameras = [orbit_camera(a, el, r, orbit.fov_x_deg, args.resolution, args.resolution) for a in azimuths]
    times = np.linspace(0.0, 1.0, args.views).tolist()

    plain_rate, plain_spr, plain = measure(field, None, cameras, times, render, args.seconds)
    grid_rate, grid_spr, skipped = measure(field, grid, cameras, times, render, args.seconds)
    diff = float((skipped - plain).abs().max())
    print(f"scene: {meta.get('caption')} ({meta.get('source')}), step {meta.get('step')}; occupied cells {grid.occupied_fraction:.3f}")
    print(f"{args.views} views {args.resolution}x{args.resolution}, {render.n_samples} samples per ray across the box, early stop at T < {render.early_stop_eps:g}")
    print(f"{'occupancy':>12} {'rays/s':>10} {'samples/ray':>12} {'speed-up':>9} {'max |diff|':>11}")
    print(f"{'off':>12} {plain_rate:>10.0f} {plain_spr:>12.1f} {1.0:>8.2f}x {0.0:>11.4f}")
    print(f"{'on':>12} {grid_rate:>10.0f} {grid_spr:>12.1f} {grid_rate / plain_rate:>8.2f}x {diff:>11.4f}")


if __name__ == "__main__":
    main()
