"""Images per second of the world renderer at 64x64 and 256x256, single views and batches.

Run: python benchmarks/world_render.py [--rounds 5] [--images 32] [--seconds 0]
The four settings (64x64 one view per call, 64x64 in batches of 32, 256x256 one view per call,
256x256 in batches of 8) alternate in one run, after a warm-up of each; each call renders
--images images at 64x64 (a quarter of them at 256x256), again until --seconds have passed. Every ratio to 64x64 single views is
taken within a round and printed as its median and spread over the rounds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _timing import add_rounds_argument, alternate, print_ratio, print_times

from fourdistill.world import DEFAULT_ORBIT, make_scene, render_views

SETTINGS = ((64, 1), (64, 32), (256, 1), (256, 8))


def render_images(scenes, size: int, batch: int, n_images: int, seconds: float, seed: int):
    """A callable that renders `n_images` views at `size` in calls of `batch` views, again until
    `seconds` have passed, and returns its seconds per image."""
    rng = np.random.default_rng(seed)

    def call() -> float:
        done, k, start = 0, 0, time.perf_counter()
        while done == 0 or time.perf_counter() - start < seconds:
            for _ in range(0, n_images, batch):
                scene = scenes[k % len(scenes)]
                cams = [DEFAULT_ORBIT.sample(rng, size, size) for _ in range(batch)]
                render_views(scene, cams, rng.uniform(0, 1, batch))
                k += 1
            done += n_images
        return (time.perf_counter() - start) / done

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per timed call at 64x64; a quarter at 256x256 (default 32)")
    parser.add_argument("--seconds", type=float, default=0.0, help="least time per timed call: it renders its images again until it has passed (default 0: once)")
    add_rounds_argument(parser, default=5)
    args = parser.parse_args()
    scenes = [make_scene(s) for s in range(16)]
    variants = {}
    for size, batch in SETTINGS:
        n = args.images if size == 64 else max(args.images // 4, batch)
        n = max(n // batch, 1) * batch
        name = f"{size}x{size} batch {batch}"
        variants[name] = render_images(scenes, size, batch, n, args.seconds, seed=0)
    timings = alternate(variants, rounds=args.rounds, warmup=1, unit="image")
    print(f"settings alternated over {args.rounds} rounds after a warm-up")
    print_times(timings)
    for name in variants:
        print(f"  {name}: {1 / timings.median(name):.1f} images/s, {60 / timings.median(name):.0f} images/min (medians)")
    base = next(iter(variants))
    for name in list(variants)[1:]:
        print_ratio(timings, base, name, f"{name} vs {base} (images/s ratio)")


if __name__ == "__main__":
    main()
