"""`fourdistill evaluate`: score time and view control against the world's ground truth."""

from __future__ import annotations

import argparse

from ..evaluate.config import KINDS, METHODS, ControlEvalConfig
from ..engine.flags import HELD_OUT_SCENES, at_least, at_most, nonnegative_float, nonnegative_int, positive_int, seed_int


def register(sub) -> None:
    d = ControlEvalConfig()
    ev = sub.add_parser(
        "evaluate",
        help="score time and view control against the world's ground truth (held-out seeds)",
        description="Generate from held-out world pairs (reference render + time/view change) and score the images "
        "against the true target renders: PSNR/SSIM (masked and unmasked) binned by the size of the change, "
        "monotonicity (Spearman), identity (the judge), and the change the world's reader reads back from (reference, image) "
        "against the asked one (slope and error, beside the reader's reads of the true targets). Baselines in the same run: copying the reference, "
        "IP-Adapter alone, IP-Adapter with the change in words; ablation: no bypass at inference; further "
        "checkpoints by --ablation NAME=FOLDER. Writes report.json, report.md, psnr_vs_change.png, read_vs_asked.png and sample grids.",
    )
    ev.add_argument("--model", default=None, help="diffusion stack (default: the embedded stack)")
    ev.add_argument("--mappers", default=None, help="mapper checkpoint folder (default: the shipped mappers)")
    ev.add_argument("--ablation", action="append", default=[], metavar="NAME=FOLDER", help="another mapper checkpoint to score as method NAME (repeatable)")
    ev.add_argument("--pairs", type=at_least(2), default=d.pairs, help=f"pairs per kind (default {d.pairs})")
    ev.add_argument("--scenes", type=at_most(HELD_OUT_SCENES, "the held-out world scenes"), default=d.scenes, help=f"held-out scenes the pairs come from (default {d.scenes})")
    ev.add_argument("--kinds", nargs="+", default=list(d.kinds), choices=list(KINDS), help="kinds of control to score (default all the mappers support)")
    ev.add_argument("--methods", nargs="+", default=list(d.methods), choices=list(METHODS), help="methods to run (default all)")
    ev.add_argument("--steps", type=positive_int, default=d.steps, help=f"denoising steps (default {d.steps})")
    ev.add_argument("--guidance", type=nonnegative_float, default=d.guidance, help=f"guidance scale (default {d.guidance})")
    ev.add_argument("--ip-scale", type=nonnegative_float, default=None, help="IP-Adapter scale (default: the one the mappers were distilled with)")
    ev.add_argument("--batch", type=positive_int, default=d.batch, help=f"images per generation call (default {d.batch})")
    ev.add_argument("--seed", type=seed_int, default=d.seed, help="seed of pairs and noise (default 0)")
    ev.add_argument("--threads", type=nonnegative_int, default=None, help="torch threads on CPU (default: torch's)")
    ev.add_argument("--fvd-detector", default=None, help="TorchScript I3D (i3d_torchscript.pt): adds FVD of time-sweep videos")
    ev.add_argument("--fvd-videos", type=positive_int, default=16, help="videos per method for FVD (default 16)")
    ev.add_argument("--lpips-backbone", default=None, help="torchvision AlexNet weights: with --lpips-linear adds LPIPS against the truth")
    ev.add_argument("--lpips-linear", default=None, help="LPIPS v0.1 linear layers (alex.pth)")
    ev.add_argument("--clip-model", default=None, help="local CLIP model folder: adds the CLIP score against the caption")
    ev.add_argument("--reader", default=None, metavar="FOLDER", help="reader folder that reads the change back (default: the shipped reader)")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=evaluate_main)


def evaluate_main(args: argparse.Namespace) -> int:
    from ..engine.run import invoked_command, set_threads
    from ..evaluate.control import evaluate_control, markdown_report, write_report
    from ..evaluate.learned import LPIPS, ClipScorer, load_i3d
    from ..evaluate.reader import load_reader
    from ..generate import ControlledPipeline
    from ..io import check_writable

    check_writable(args.out, "--out")
    set_threads(args.threads)
    extra = {}
    for item in args.ablation:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--ablation {item!r}: expected NAME=FOLDER")
        extra[name] = folder
    cfg = ControlEvalConfig(
        pairs=args.pairs, scenes=args.scenes, kinds=tuple(args.kinds), steps=args.steps, guidance=args.guidance,
        ip_adapter_scale=args.ip_scale, batch=args.batch, seed=args.seed, methods=tuple(args.methods), extra=extra,
    )
    learned = {}
    if args.lpips_backbone or args.lpips_linear:
        learned["lpips"] = LPIPS.from_files(args.lpips_backbone, args.lpips_linear)
    if args.clip_model:
        learned["clip"] = ClipScorer(args.clip_model)
    if args.fvd_detector:
        learned.update(fvd=load_i3d(args.fvd_detector), fvd_videos=args.fvd_videos)
    reader = load_reader(args.reader)
    cp = ControlledPipeline.from_pretrained(args.model, args.mappers)
    extra_pipelines = {name: ControlledPipeline(cp.pipe, folder) for name, folder in extra.items()}
    report = evaluate_control(cp, cfg, extra_pipelines=extra_pipelines, progress=not args.quiet, samples_dir=f"{args.out}/samples", learned=learned, reader=reader)
    command = invoked_command()
    folder = write_report(report, args.out, command)
    print(markdown_report(report, command))
    print(f"wrote {folder}/report.json, report.md, psnr_vs_change.png, read_vs_asked.png")
    return 0
