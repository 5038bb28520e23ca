"""What a wider embedded-stack U-Net costs per training step: the shipped [64, 128, 128] against
the [32, 64, 64] one shipped before it (sized for an hour of this CPU).

Runs the real `teachers train` U-Net phase (U-Net, text encoder, image encoder and IP-Adapter
trained jointly, batch 32 at 64x64, one torch thread by default) for a few steps at each
U-Net width on a small rendered training set, the widths alternating in rounds in this process,
and prints each width's parameters and seconds per step, and the ratio to the first width
(median and spread over the rounds). The VAE phase is one step (it is not what is compared).
Each width runs twice per round, 5 steps and --steps steps, and the difference of their U-Net
times is divided by the extra steps. A round takes minutes; this is not a quick check.

Run: python benchmarks/stack_width.py [--widths 32,64,64 64,128,128] [--steps 15] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _timing import add_rounds_argument, alternate, print_ratio, print_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", default=["32,64,64", "64,128,128"], help="U-Net block_out_channels, the base of the ratios first")
    ap.add_argument("--steps", type=int, default=15, help="U-Net steps per width and round; the first 5 are not counted")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    add_rounds_argument(ap, default=2)
    args = ap.parse_args()
    if args.steps <= 5:
        ap.error("--steps must be > 5 (the first 5 warm up)")

    from safetensors.torch import load_file

    from fourdistill.teachers.data import DataConfig
    from fourdistill.teachers.image.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10**9))

        def per_step_seconds(channels: tuple[int, ...]):
            """Train a short and a long run at this width; U-Net seconds per extra step."""
            cfg = TrainConfig(data=DataConfig(n_scenes=32, views_per_scene=2), vae_steps=1, vae_batch=2, unet_steps=args.steps,
                              batch=args.batch, threads=args.threads, sample_every=10**6, checkpoint_every=10**6)
            cfg.stack.unet.block_out_channels = channels

            def run() -> float:
                # unet_s includes each run's start-up; the difference of a short and a long
                # run leaves only the steps in between
                unet_s = []
                for steps in (5, args.steps):
                    folder = Path(tmp) / f"run{next(runs)}"
                    stack = train(folder, TrainConfig.from_dict({**cfg.to_dict(), "unet_steps": steps}), progress=False, log=lambda *a, **kw: None)
                    unet_s.append(json.loads((folder / "train_summary.json").read_text())["phase_wall_s"]["unet"])
                    params[channels] = sum(v.numel() for v in load_file(str(stack / "unet" / "diffusion_pytorch_model.safetensors")).values())
                return float((unet_s[1] - unet_s[0]) / (args.steps - 5))

            return run

        params: dict[tuple[int, ...], int] = {}
        widths = {w: tuple(int(c) for c in w.split(",")) for w in args.widths}
        # each variant measures its own U-Net seconds per step (returned), so no warm-up
        timings = alternate({w: per_step_seconds(c) for w, c in widths.items()}, rounds=args.rounds, warmup=0, unit="step")
    print(f"widths alternated over {args.rounds} rounds")
    print_times(timings, labels={w: f"{w} ({params[c]:,} params)" for w, c in widths.items()})
    base = args.widths[0]
    for w in args.widths[1:]:
        print_ratio(timings, w, base, f"{w} / {base} seconds per step")


if __name__ == "__main__":
    main()
