"""Images per second of the world renderer at 64x64 and 256x256, single views and batches.

Run: python benchmarks/world_render.py [--rounds 5] [--images 32]
The four settings (64x64 one view per call, 64x64 in batches of 32, 256x256 one view per call,
256x256 in batches of 8) alternate in one run, after a warm-up of each; each call renders
--images images at 64x64 (a quarter of them at 256x256). Every ratio to 64x64 single views is
taken within a round and printed as its median and spread over the rounds.
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import add_rounds_argument, alternate, print_ratio, print_times

from fourdistill.world import DEFAULT_ORBIT, make_scene

SETTINGS = ((64, 1), (64, 32), (256, 1), (256, 8))


def render_images(scenes, size: int, batch: int, n_images: int, seed: int):
    """A callable that renders `n_images` views at `size` in calls of `batch` views."""
    rng = np.random.default_rng(seed)

    def call():
        for k in range(0, n_images, batch):
            scene = scenes[k % len(scenes)]
            cams = [DEFAULT_ORBIT.sample(rng, size, size) for _ in range(batch)]
            scene.render_batch(cams, rng.uniform(0, 1, batch))

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per timed call at 64x64; a quarter at 256x256 (default 32)")
    add_rounds_argument(parser, default=5)
    args = parser.parse_args()
    scenes = [make_scene(s) for s in range(16)]
    variants, units = {}, {}
    for size, batch in SETTINGS:
        n = args.images if size == 64 else max(args.images // 4, batch)
        n = max(n // batch, 1) * batch
        name = f"{size}x{size} batch {batch}"
        variants[name] = render_images(scenes, size, batch, n, seed=0)
        units[name] = n
    timings = alternate(variants, rounds=args.rounds, warmup=1, units=units, unit="image")
    print(f"settings alternated over {args.rounds} rounds after a warm-up")
    print_times(timings)
    for name in variants:
        print(f"  {name}: {1 / timings.median(name):.1f} images/s, {60 / timings.median(name):.0f} images/min (medians)")
    base = next(iter(variants))
    for name in list(variants)[1:]:
        print_ratio(timings, base, name, f"{name} vs {base} (images/s ratio)")


if __name__ == "__main__":
    main()
