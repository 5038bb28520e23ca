"""Where a text-to-4D step's time goes, per teacher, and steps per second against render-only.

Run: python benchmarks/text_to_4d_step.py [--config configs/text_to_4d/embedded.yaml] [--rounds 5]
For each teacher (multi-view: 4 views; image: 1 view; video: T frames) one step is split into
its parts, timed inside the step: render (the field's forward pass), guidance (the teacher's call
as the preset has it: encoding the renders, the U-Net's guided prediction and the loss, and in
image space the decode of the target) and backward (into the field, through the VAE encoder in
latent space, past it in image space). The parts' shares and the steps per
second are printed beside the render-only rate (the same renders, forward and backward of their
mean, no teacher), all measured in alternating rounds of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _timing import add_rounds_argument


PARTS = ("render", "guidance", "backward")


def main() -> None:
    from fourdistill.engine.config import load_config
    from fourdistill.engine.loop import step_generators
    from fourdistill.field.checkpoint import step_size
    from fourdistill.field.field import Field4D
    from fourdistill.field.render import OccupancyGrid, render_cameras
    from fourdistill.sds.recipe import sample_cameras
    from fourdistill.teachers.data import clip_times
    from fourdistill.sds.text_to_4d import TextTo4DConfig, Teachers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="a text-to-4d preset (default: TextTo4DConfig's defaults)")
    parser.add_argument("--threads", type=int, default=1)
    add_rounds_argument(parser, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(TextTo4DConfig, args.config) if args.config else TextTo4DConfig()
    cfg.caption = "a red cube spinning next to a blue ball"
    teachers = Teachers(cfg)
    field = Field4D(cfg.field)
    grid = OccupancyGrid(cfg.occupancy, field.bound, step_size(field.bound, cfg.render))
    res = cfg.render_resolution

    def views(teacher, rng):
        if teacher == "video":
            cam = sample_cameras(cfg.camera, rng, 1, res)[0]
            return [cam] * cfg.n_frames, list(clip_times(rng, cfg.n_frames))
        n = 4 if teacher == "multiview" else 1
        cams = sample_cameras(cfg.camera, rng, n, res)
        return cams, [0.5] * n

    def step(teacher, rng, gen, parts):
        cams, times = views(teacher, rng)
        g, prompts = teachers.guidance[teacher], teachers.prompts[teacher]
        c2w = torch.from_numpy(np.stack([c.c2w for c in cams]).astype(np.float32))
        t0 = time.perf_counter()
        rgb = render_cameras(field, grid, cams, times, cfg.render, stratified=True, generator=gen)["rgb"]
        t1 = time.perf_counter()
        images = rgb[None] if teacher in ("video", "multiview") else rgb
        if teacher == "multiview":
            loss = g(images, prompts, c2w[None], generator=gen)["loss"]
        elif teacher == "image" and hasattr(g, "lora_parameters"):
            loss = g(images, prompts, c2w, generator=gen)["loss"]
        else:
            loss = g(images, prompts, generator=gen)["loss"]  # the preset's loss space (image: encode, teacher, decode)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        for name, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(dt)
        return t3 - t0

    def render_only(teacher, rng, gen):
        cams, times = views(teacher, rng)
        t0 = time.perf_counter()
        render_cameras(field, grid, cams, times, cfg.render, stratified=True, generator=gen)["rgb"].mean().backward()
        return time.perf_counter() - t0

    print(f"render {res}x{res}, {cfg.render.n_samples} samples per ray, {args.threads} thread(s); field untrained (every sample evaluated)")
    for teacher in sorted(teachers.guidance):
        parts = {k: [] for k in PARTS}
        full, only = [], []
        for r in range(args.rounds + 1):
            rng, gen = step_generators(0, r)
            a = step(teacher, rng, gen, parts)
            rng, gen = step_generators(0, r)
            b = render_only(teacher, rng, gen)
            field.zero_grad(set_to_none=True)
            if r:  # the first round warms up
                full.append(a)
                only.append(b)
        for k in parts:
            parts[k] = parts[k][1:]
        total = sum(statistics.median(v) for v in parts.values())
        shares = ", ".join(f"{k} {statistics.median(v) / total:.0%}" for k, v in parts.items())
        ratio = [o / f for o, f in zip(only, full)]
        print(f"{teacher:9s}: {1 / statistics.median(full):.2f} steps/s ({shares}); render-only {1 / statistics.median(only):.2f}/s; "
              f"a step runs at {statistics.median(ratio):.2f}x the render-only rate (min {min(ratio):.2f}, max {max(ratio):.2f})")


if __name__ == "__main__":
    main()
