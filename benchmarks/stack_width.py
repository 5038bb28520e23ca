"""What a wider embedded-stack U-Net costs per training step: the shipped [64, 128, 128] against
the [32, 64, 64] one shipped before it (sized for an hour of this CPU).

Runs the real `teachers train` U-Net phase (U-Net, text encoder, image encoder and IP-Adapter
trained jointly, batch 32 at 64x64, one torch thread by default) for a few steps at each
U-Net width, one after the other in this process on a small rendered training set, and prints
each width's parameters and seconds per step, and their ratio to the first width. The VAE
phase is one step (it is not what is compared). Each width runs twice, 5 steps and --steps
steps, and the difference of their U-Net times is divided by the extra steps.

Run: python benchmarks/stack_width.py [--widths 32,64,64 64,128,128] [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", default=["32,64,64", "64,128,128"], help="U-Net block_out_channels, the base of the ratios first")
    ap.add_argument("--steps", type=int, default=30, help="U-Net steps per width; the first 5 are not counted")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.steps <= 5:
        ap.error("--steps must be > 5 (the first 5 warm up)")

    from safetensors.torch import load_file

    from fourdistill.teachers.data import DataConfig
    from fourdistill.teachers.image.train import TrainConfig, train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, w in enumerate(args.widths):
            channels = [int(c) for c in w.split(",")]
            cfg = TrainConfig(data=DataConfig(n_scenes=32, views_per_scene=2), vae_steps=1, vae_batch=2, unet_steps=args.steps,
                              batch=args.batch, threads=args.threads, sample_every=10**6, checkpoint_every=10**6)
            cfg.stack.unet.block_out_channels = tuple(channels)
            # unet_s includes each run's start-up; the difference of a short and a long run leaves
            # only the steps in between (train() draws no sample grids without sample_grid)
            unet_s = []
            for steps in (5, args.steps):
                run = Path(tmp) / f"w{k}_{steps}"
                stack_folder = train(run, TrainConfig.from_dict({**cfg.to_dict(), "unet_steps": steps}), progress=False, log=lambda *a, **kw: None)
                unet_s.append(json.loads((run / "train_summary.json").read_text())["phase_wall_s"]["unet"])
            per_step = (unet_s[1] - unet_s[0]) / (args.steps - 5)
            params = sum(v.numel() for v in load_file(str(stack_folder / "unet" / "diffusion_pytorch_model.safetensors")).values())
            rows.append((w, params, per_step))
    base = rows[0][2]
    print(f"{'U-Net widths':>14} {'params':>10} {'s/step':>8} {'ratio':>6}")
    for w, params, per_step in rows:
        print(f"{w:>14} {params:>10,} {per_step:8.2f} {per_step / base:6.2f}x")


if __name__ == "__main__":
    main()
