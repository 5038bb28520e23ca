"""Images per second of the world renderer at 64x64 and 256x256, single views and batches.

Run: python benchmarks/world_render.py [--seconds 3]
Prints one table, measured in one run; the ratios between rows are what to compare
(absolute rates drift with the machine's load).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fourdistill.world import DEFAULT_ORBIT, make_scene, render_views


def rate(size: int, batch: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    scenes = [make_scene(s) for s in range(16)]
    done, start, k = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        scene = scenes[k % len(scenes)]
        cams = [DEFAULT_ORBIT.sample(rng, size, size) for _ in range(batch)]
        render_views(scene, cams, rng.uniform(0, 1, batch))
        done += batch
        k += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    args = parser.parse_args()
    rows = []
    for size, batch in ((64, 1), (64, 32), (256, 1), (256, 8)):
        rows.append((size, batch, rate(size, batch, args.seconds)))
    base = rows[0][2]
    print(f"{'size':>8} {'batch':>6} {'images/s':>10} {'images/min':>11} {'vs 64x64 single':>16}")
    for size, batch, r in rows:
        print(f"{size:>4}x{size:<3} {batch:>6} {r:>10.1f} {r * 60:>11.0f} {r / base:>15.2f}x")


if __name__ == "__main__":
    main()
