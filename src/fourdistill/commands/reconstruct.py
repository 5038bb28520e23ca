"""`fourdistill reconstruct PATH`: fit a 4D field to a posed, time-stamped source."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.config import add_common_flags
from ..engine.flags import at_least, check_settings, nonnegative_float, nonnegative_int, positive_int, seed_int, unit_interval_open_low

# ReconstructConfig fields held to their flag's rule wherever they come from (a --config file too).
SETTING_TYPES = {
    "steps": positive_int, "seed": seed_int, "samples_per_step": positive_int, "holdout_every": at_least(2), "eval_every": nonnegative_int,
    "static_steps": nonnegative_int, "time_smoothness_weight": nonnegative_float, "field.time_scale": unit_interval_open_low,
    "render.n_samples": positive_int,
}


def register(sub) -> None:
    parser = sub.add_parser(
        "reconstruct",
        help="fit a 4D hash-grid field to a D-NeRF folder or any posed, time-stamped source",
        description="Fit the 4D field (static + dynamic hash grids, as in 4D-fy) to posed, time-stamped "
        "images. Prints PSNR as it trains, writes resumable checkpoints to OUT/checkpoint, and at the end "
        "test-view PSNR/SSIM (OUT/metrics.json, OUT/test_views.png) and a video along a novel camera path "
        "through time (OUT/video.mp4). The checkpoint folder is itself a 4D source (fourdistill inspect OUT).",
    )
    parser.add_argument("path", metavar="PATH", help="D-NeRF folder, nerfstudio capture, world:SEED, or any posed source")
    add_common_flags(parser, "ReconstructConfig", out_required=True)
    parser.add_argument("--samples-per-step", type=positive_int, default=None, help="field samples per step; the ray count adapts (default: ReconstructConfig.samples_per_step)")
    parser.add_argument("--samples", type=positive_int, default=None, help="samples per ray across the scene box (default: ReconstructConfig.render.n_samples)")
    parser.add_argument(
        "--background", default="1,1,1", help="R,G,B in [0, 1] that RGBA images are composited over (default 1,1,1: white)"
    )
    parser.add_argument("--holdout-every", type=at_least(2), default=None, help="sources without a test split: hold out every k-th frame (default: ReconstructConfig.holdout_every)")
    parser.add_argument("--eval-every", type=nonnegative_int, default=None, help="test PSNR every this many steps (default: ReconstructConfig.eval_every; 0: only at the end)")
    parser.add_argument("--static-steps", type=nonnegative_int, default=None, help="first steps with the dynamic grid frozen (default: ReconstructConfig.static_steps)")
    parser.add_argument("--time-scale", type=unit_interval_open_low, default=None, help="time-axis resolution of the dynamic grid relative to space, in (0, 1] (default: ReconstructConfig.field.time_scale)")
    parser.add_argument("--time-smoothness", type=nonnegative_float, default=None, help="weight of the temporal smoothness of the dynamic grid (default: ReconstructConfig.time_smoothness_weight)")
    parser.add_argument("--no-video", action="store_true", help="skip the novel-path video")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=reconstruct_main)


def background_color(text: str) -> tuple[float, float, float]:
    """--background "R,G,B" as three floats in [0, 1]; ValueError naming the flag otherwise."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--background must be three numbers in [0, 1] separated by commas, got {text!r}")
    return values


def reconstruct_main(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import verify_checkpoint
    from ..engine.config import config_from_args
    from ..engine.run import check_writable, invoked_command, set_threads
    from ..field import META_NAME as FIELD_META
    from ..field.checkpoint import WEIGHTS_NAME as FIELD_WEIGHTS
    from ..field.reconstruct import ReconstructConfig, open_for_reconstruction, reconstruct
    from ..sources.world_seed import world_seed_of
    from ..world import EVAL_SEEDS

    check_writable(args.out, "--out")
    if args.resume:  # a damaged checkpoint is named before the run folder is touched
        verify_checkpoint(Path(args.out) / "checkpoint", weights_name=FIELD_WEIGHTS, meta_name=FIELD_META)
    set_threads(args.threads)
    cfg = config_from_args(
        ReconstructConfig,
        args,
        {
            "samples_per_step": args.samples_per_step,
            "holdout_every": args.holdout_every,
            "eval_every": args.eval_every,
            "static_steps": args.static_steps,
            "time_smoothness_weight": args.time_smoothness,
            "field.time_scale": args.time_scale,
            "render.n_samples": args.samples,
        },
    )
    check_settings(cfg, SETTING_TYPES, args.config or "flags")
    seed = world_seed_of(args.path)
    if seed is not None and seed in EVAL_SEEDS:
        print(
            f"note: {args.path} shows world scene {seed}, held out for evaluation: the fitted field records it, "
            "and `fourdistill distill` refuses the field as training data",
            file=sys.stderr,
        )
    train, train_idx, test, test_idx = open_for_reconstruction(args.path, cfg.holdout_every, background_color(args.background))
    metrics = reconstruct(
        train, args.out, cfg, train_idx, test, test_idx, resume=args.resume, progress=not args.quiet, write_video=not args.no_video,
        command=invoked_command(),
    )
    print(f"wrote {args.out}/checkpoint (step {metrics['steps']}, {metrics['wall_s']:.0f} s of training)")
    if "test" in metrics:
        mean = metrics["test"]["mean"]
        print(f"test PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f} over {metrics['test_views']} views")
    return 0
