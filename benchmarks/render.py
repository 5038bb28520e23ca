"""Rays per second of the field renderer with and without occupancy skipping, on a fitted scene.

Run: python benchmarks/render.py --run OUT        (a `fourdistill reconstruct` run folder)
     python benchmarks/render.py                  (fits a held-out world scene first, minutes; --save-fit DIR keeps it)
     [--rounds 5] [--seconds 1]
The renders without and with the occupancy grid alternate in one run (off, on, off, on, ...
after a warm-up of each; each call renders the orbit for at least --seconds); the speed-up is
taken within each round and printed as its median and spread, with rays/s, field samples per
ray and the largest pixel difference from the render without skipping. Both stop rays early
(transmittance below 1e-4); only the occupancy grid differs.
Goal (reconstruction issue): occupancy skipping >= 3x faster.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import add_rounds_argument, alternate, print_ratio, print_times


def fit_scene(folder: Path, steps: int, seed: int) -> Path:
    from fourdistill.field.reconstruct import ReconstructConfig, open_for_reconstruction, reconstruct
    from fourdistill.world import EVAL_SEEDS, export_dnerf, make_scene

    data = folder / "dnerf"
    export_dnerf(make_scene(EVAL_SEEDS[seed]), data, resolution=64, n_train=50, n_val=0, n_test=0)
    train, ti, _, _ = open_for_reconstruction(data)
    cfg = ReconstructConfig(steps=steps, eval_every=0, checkpoint_every=0)
    reconstruct(train, folder / "run", cfg, ti, write_video=False)
    return folder / "run"


def orbit_pass(field, grid, cameras, times, render, seconds: float, last: dict) -> float:
    """Render every camera, again until `seconds` have passed; return seconds per ray and keep
    the samples per ray and the last images (N, H, W, 3) in `last`."""
    from fourdistill.field.render import render_image

    rays = samples = 0
    images = None
    start = time.perf_counter()
    while images is None or time.perf_counter() - start < seconds:
        outs = [render_image(field, c, t, render, grid) for c, t in zip(cameras, times)]
        rays += sum(c.width * c.height for c in cameras)
        samples += sum(o["samples"] for o in outs)
        images = torch.stack([o["rgb"] for o in outs])
    elapsed = time.perf_counter() - start
    last.update(samples_per_ray=samples / rays, images=images)
    return elapsed / rays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="reconstruct run folder or checkpoint (default: fit one first)")
    parser.add_argument("--fit-steps", type=int, default=200,
                        help="steps when fitting a scene first (default 200, minutes on one core; the documented speed-up is on a 1500-step fit)")
    parser.add_argument("--save-fit", default=None, help="keep the fitted run in this folder, to measure the same scene again with --run")
    parser.add_argument("--seed-index", type=int, default=3, help="which evaluation seed to fit (default 3)")
    parser.add_argument("--views", type=int, default=8, help="cameras on the orbit (default 8)")
    parser.add_argument("--resolution", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--seconds", type=float, default=1.0, help="least time per timed call: the orbit is rendered again until it has passed (default 1)")
    add_rounds_argument(parser, default=5)
    args = parser.parse_args()

    from fourdistill.cameras import orbit_camera
    from fourdistill.field.checkpoint import load_checkpoint, orbit_from_dict

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else fit_scene(Path(args.save_fit or tmp), args.fit_steps, args.seed_index)
        field, grid, meta = load_checkpoint(run)
    render = meta["render_config"]
    orbit = orbit_from_dict(meta["orbit"])
    el, r = float(np.mean(orbit.elevation_deg)), float(np.mean(orbit.radius))
    azimuths = np.linspace(-180.0, 180.0, args.views, endpoint=False) + 10.0
    cameras = [orbit_camera(a, el, r, orbit.fov_x_deg, args.resolution, args.resolution) for a in azimuths]
    times = np.linspace(0.0, 1.0, args.views).tolist()

    last = {"off": {}, "on": {}}
    variants = {
        "off": lambda: orbit_pass(field, None, cameras, times, render, args.seconds, last["off"]),
        "on": lambda: orbit_pass(field, grid, cameras, times, render, args.seconds, last["on"]),
    }
    timings = alternate(variants, rounds=args.rounds, warmup=1, unit="ray")
    diff = float((last["on"]["images"] - last["off"]["images"]).abs().max())
    print(f"scene: {meta.get('caption')} ({meta.get('source')}), step {meta.get('step')}; occupied cells {grid.occupied_fraction:.3f}")
    print(f"{args.views} views {args.resolution}x{args.resolution}, {render.n_samples} samples per ray across the box, early stop at T < {render.early_stop_eps:g}; "
          f"occupancy off and on alternated over {args.rounds} rounds after a warm-up")
    print_times(timings, labels={"off": "occupancy off", "on": "occupancy on"})
    for name in ("off", "on"):
        print(f"  occupancy {name}: {1 / timings.median(name):.0f} rays/s (median), {last[name]['samples_per_ray']:.1f} field samples per ray")
    print(f"  largest pixel difference on - off: {diff:.4f}")
    print_ratio(timings, "off", "on", "speed-up of occupancy skipping (off / on)", at_least=3.0)


if __name__ == "__main__":
    main()
