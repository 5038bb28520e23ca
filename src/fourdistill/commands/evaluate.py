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
    ev.add_argument("--out", default=None, help="report folder (required)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=evaluate_main)
    kinds = ev.add_subparsers(dest="evaluate_kind", metavar="KIND",
                              help="text-to-4d: score generated 4D scenes instead (fourdistill evaluate text-to-4d --help)")
    t2f = kinds.add_parser(
        "text-to-4d",
        help="generate 4D scenes from held-out captions with the recipe and its ablations, and score them",
        description="For each of the first N held-out captions (captions of EVAL_SEEDS scenes) and each variant of the recipe "
        "(full; no-multiview; no-video; image-only: the removed teacher's steps go to the image teacher), generate a scene "
        "into OUT/runs/<variant>/<k> (finished runs are read again, interrupted ones resumed) and score it with the judge "
        "and the reader on 4D-fy's evaluation orbit (elevation 15, radius 3, fov 40): object accuracy over views and times, "
        "motion accuracy from fixed-camera clips, 3D consistency of the read azimuths along the orbit, and R-precision among "
        "20 held-out captions; the world's own scenes are scored as the ceiling. Writes OUT/report.json and OUT/report.md.",
    )
    t2f.add_argument("--config", metavar="FILE", default=None, help="the recipe preset (default: TextTo4DConfig's defaults, the embedded preset)")
    t2f.add_argument("--captions", type=positive_int, default=4, help="held-out captions (default 4)")
    t2f.add_argument("--variants", nargs="+", default=["full", "no-multiview", "no-video", "image-only"],
                     choices=["full", "no-multiview", "no-video", "image-only"], help="variants to run (default all)")
    t2f.add_argument("--seed", type=seed_int, default=0, help="seed of the first caption's run (caption k: seed + k)")
    t2f.add_argument("--threads", type=nonnegative_int, default=None, help="torch threads on CPU (default: torch's)")
    t2f.add_argument("--out", required=True, help="report folder (its runs/ holds the generated scenes)")
    t2f.add_argument("--quiet", action="store_true", help="no progress bar")
    t2f.set_defaults(handler=evaluate_text_to_4d_main)


def evaluate_text_to_4d_main(args: argparse.Namespace) -> int:
    from ..engine.config import load_config
    from ..engine.run import set_threads
    from ..evaluate.text_to_4d import evaluate_text_to_4d, markdown_report
    from ..io import check_writable
    from ..sds.text_to_4d import TextTo4DConfig

    check_writable(args.out, "--out")
    set_threads(args.threads)
    cfg = load_config(TextTo4DConfig, args.config) if args.config else TextTo4DConfig()
    report = evaluate_text_to_4d(args.out, cfg, args.captions, args.variants, seed=args.seed, progress=not args.quiet)
    print(markdown_report(report))
    return 0


def evaluate_main(args: argparse.Namespace) -> int:
    if args.out is None:
        raise ValueError("--out: required (the report folder)")
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
