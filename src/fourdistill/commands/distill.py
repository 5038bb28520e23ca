"""`fourdistill distill`: train Time / View Mappers from a 4D source."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import add_common_flags
from ..engine.flags import check_settings, nonnegative_float, nonnegative_int, positive_float, positive_int, probability, seed_int

# DistillConfig fields held to their flag's rule wherever they come from (a --config file too).
SETTING_TYPES = {
    "steps": positive_int, "seed": seed_int, "batch_size": positive_int, "grad_accum": positive_int, "lr": positive_float,
    "ip_adapter_scale": nonnegative_float, "time_alpha": probability, "view_alpha": probability, "nested_dropout_p": probability,
    "save_every": positive_int, "validate_every": nonnegative_int,
}


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a 4D source into Time / View Mappers of a frozen diffusion model",
        description="Train NeTI-style Time and View Mappers on pairs from a 4D source. Only the mappers train; "
        "the VAE, U-Net, text encoder, image encoder and IP-Adapter stay frozen. Runs data-parallel under "
        "`accelerate launch -m fourdistill.cli distill ...`.",
    )
    p.add_argument("--source", default=None, help="'world' (procedural scenes), a video, a D-NeRF or nerfstudio folder, or a fitted field (default: DistillConfig.source)")
    p.add_argument("--mode", default=None, choices=("time", "view", "joint"), help="which control to learn (default: DistillConfig.mode)")
    p.add_argument("--model", default=None, help="diffusion stack: a local folder or hub id (default: the embedded stack)")
    add_common_flags(p, "DistillConfig")
    p.add_argument("--batch-size", type=positive_int, default=None, help="pairs per micro-batch (default: DistillConfig.batch_size)")
    p.add_argument("--grad-accum", type=positive_int, default=None, help="micro-batches per step (default: DistillConfig.grad_accum)")
    p.add_argument("--lr", type=positive_float, default=None, help="AdamW learning rate (default: DistillConfig.lr)")
    p.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"], help="GPU only (default: DistillConfig.mixed_precision)")
    p.add_argument("--world-seeds", type=nonnegative_int, nargs=2, default=None, metavar=("START", "STOP"), help="training scenes for --source world (default: DistillConfig.world_seeds)")
    p.add_argument("--ip-scale", type=nonnegative_float, default=None, help="IP-Adapter scale during distillation (default: DistillConfig.ip_adapter_scale, the reference's)")
    p.add_argument("--time-alpha", type=probability, default=None, help="bypass alpha of the time token (default: DistillConfig.time_alpha)")
    p.add_argument("--view-alpha", type=probability, default=None, help="bypass alpha of the view token (default: DistillConfig.view_alpha)")
    p.add_argument("--nested-dropout", type=probability, default=None, help="nested-dropout probability (default: DistillConfig.nested_dropout_p; 0 turns it off)")
    p.add_argument("--view-condition", default=None, choices=["spherical", "matrix"], help="View Mapper input (default: DistillConfig.view_condition)")
    p.add_argument("--save-every", type=positive_int, default=None, help="checkpoint interval in steps (default: DistillConfig.save_every)")
    p.add_argument("--validate-every", type=nonnegative_int, default=None, help="steps between validation grids in OUT/validation (default: DistillConfig.validate_every; 0: none)")
    p.set_defaults(handler=distill_main)


def distill_main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..distill import DistillConfig, check_training_data, run
    from ..sources import open_source
    from ..engine.config import config_from_args
    from ..engine.run import check_writable, invoked_command, set_threads

    cfg = config_from_args(
        DistillConfig,
        args,
        {
            "source": args.source,
            "mode": args.mode,
            "model": args.model,
            "batch_size": args.batch_size,
            "grad_accum": args.grad_accum,
            "lr": args.lr,
            "mixed_precision": args.mixed_precision,
            "world_seeds": args.world_seeds,
            "view_condition": args.view_condition,
            "save_every": args.save_every,
            "validate_every": args.validate_every,
            "ip_adapter_scale": args.ip_scale,
            "time_alpha": args.time_alpha,
            "view_alpha": args.view_alpha,
            "nested_dropout_p": args.nested_dropout,
        },
    )
    check_settings(cfg, SETTING_TYPES, args.config or "flags")
    check_writable(cfg.out, "--out")
    check_training_data(cfg)  # held-out scenes are refused before the run folder is made
    if cfg.source != "world":
        open_source(cfg.source)  # and bad data is named now, before the run folder is made
    if args.resume:  # a damaged checkpoint is named before the run folder is touched
        from ..engine.checkpoint import verify_checkpoint
        from ..mappers.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_mapper_config

        if verify_checkpoint(Path(cfg.out) / "checkpoint", weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME):
            read_mapper_config(Path(cfg.out) / "checkpoint")
    set_threads(args.threads)
    summary = run(cfg, resume=args.resume, command=invoked_command())
    losses = summary["losses"]
    if losses:
        k = max(1, len(losses) // 10)
        print(f"loss: first {np.mean(losses[:k]):.4f} -> last {np.mean(losses[-k:]):.4f} over {len(losses)} steps")
    print(f"checkpoint: {summary['checkpoint']} ({summary['wall_s']:.0f} s of training)")
    return 0
