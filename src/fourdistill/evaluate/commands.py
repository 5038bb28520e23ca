"""`fourdistill judge train|eval`: train the world's judge and score a judge on held-out renders."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ..engine.config import add_common_flags

    judge = sub.add_parser(
        "judge",
        help="the world's judge: a small classifier that reads object shapes and colours",
        description="Train or score the world's judge, a small CNN that reads which shapes a 64 x 64 world "
        "image shows and in which colour. It trains on training seeds only; seeds 1000000..1000999 are "
        "held out for scoring.",
    )
    jsub = judge.add_subparsers(dest="judge_command", metavar="ACTION")

    train = jsub.add_parser("train", help="train a judge on world renders and score it on held-out scenes")
    add_common_flags(train, out_required=True)  # --config --out --resume --seed --steps --threads; the judge is OUT/checkpoint
    train.add_argument("--batch-size", type=int, default=None, help="images per step (default: JudgeTrainConfig.batch_size)")
    train.add_argument("--train-scenes", type=int, default=None, help="training scenes to render (default: JudgeTrainConfig.train_scenes)")
    train.add_argument("--views-per-scene", type=int, default=None, help="random views per training scene")
    train.add_argument("--eval-scenes", type=int, default=None, help="held-out scenes to score on")
    train.add_argument("--eval-views", type=int, default=None, help="views per held-out scene")
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train)

    score = jsub.add_parser("eval", help="score a judge on renders of held-out scenes")
    score.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    score.add_argument("--scenes", type=int, default=200, help="held-out scenes (default 200)")
    score.add_argument("--views", type=int, default=4, help="random views per scene (default 4)")
    score.add_argument("--seed", type=int, default=0, help="seed for the views' cameras and times (default 0)")
    score.set_defaults(handler=_eval)
    judge.set_defaults(handler=lambda args: judge.print_help())

    from .control import METHODS, ControlEvalConfig

    d = ControlEvalConfig()
    ev = sub.add_parser(
        "evaluate",
        help="score time and view control against the world's ground truth (held-out seeds)",
        description="Generate from held-out world pairs (reference render + time/view change) and score the images "
        "against the true target renders: PSNR/SSIM (masked and unmasked) binned by the size of the change, "
        "monotonicity (Spearman) and identity (the judge). Baselines in the same run: copying the reference, "
        "IP-Adapter alone, IP-Adapter with the change in words; ablation: no bypass at inference; further "
        "checkpoints by --ablation NAME=FOLDER. Writes report.json, report.md, psnr_vs_change.png and sample grids.",
    )
    ev.add_argument("--model", default=None, help="diffusion stack (default: the embedded stack)")
    ev.add_argument("--mappers", default=None, help="mapper checkpoint folder (default: the shipped mappers)")
    ev.add_argument("--ablation", action="append", default=[], metavar="NAME=FOLDER", help="another mapper checkpoint to score as method NAME (repeatable)")
    ev.add_argument("--pairs", type=int, default=d.pairs, help=f"pairs per kind (default {d.pairs})")
    ev.add_argument("--scenes", type=int, default=d.scenes, help=f"held-out scenes the pairs come from (default {d.scenes})")
    ev.add_argument("--kinds", nargs="+", default=list(d.kinds), choices=["time", "view", "joint"], help="kinds of control to score (default all the mappers support)")
    ev.add_argument("--methods", nargs="+", default=list(d.methods), choices=list(METHODS), help="methods to run (default all)")
    ev.add_argument("--steps", type=int, default=d.steps, help=f"denoising steps (default {d.steps})")
    ev.add_argument("--guidance", type=float, default=d.guidance, help=f"guidance scale (default {d.guidance})")
    ev.add_argument("--ip-scale", type=float, default=None, help="IP-Adapter scale (default: the one the mappers were distilled with)")
    ev.add_argument("--batch", type=int, default=d.batch, help=f"images per generation call (default {d.batch})")
    ev.add_argument("--seed", type=int, default=d.seed, help="seed of pairs and noise (default 0)")
    ev.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ev.add_argument("--fvd-detector", default=None, help="TorchScript I3D (i3d_torchscript.pt): adds FVD of time-sweep videos")
    ev.add_argument("--fvd-videos", type=int, default=16, help="videos per method for FVD (default 16)")
    ev.add_argument("--lpips-backbone", default=None, help="torchvision AlexNet weights: with --lpips-linear adds LPIPS against the truth")
    ev.add_argument("--lpips-linear", default=None, help="LPIPS v0.1 linear layers (alex.pth)")
    ev.add_argument("--clip-model", default=None, help="local CLIP model folder: adds the CLIP score against the caption")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from ..engine.config import config_from_args
    from ..engine.run import set_threads
    from .judge import JudgeTrainConfig, train_judge

    overrides = {
        "batch_size": args.batch_size,
        "train_scenes": args.train_scenes,
        "views_per_scene": args.views_per_scene,
        "eval_scenes": args.eval_scenes,
        "eval_views": args.eval_views,
        "checkpoint_every": args.checkpoint_every,
    }
    config = config_from_args(JudgeTrainConfig, args, overrides)
    set_threads(args.threads)
    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if v is not None)
    source = f" --config {args.config}" if args.config else ""
    command = f"fourdistill judge train{source} --out {args.out} --steps {config.steps} --seed {config.seed}" + (f" {given}" if given else "")
    _, report = train_judge(config, out=args.out, progress=not args.quiet, command=command, resume=args.resume)
    h, t = report["heldout"], report["training"]
    print(f"trained {t['step']} steps in {t['wall_s']:.0f} s; final loss {t['final_loss']:.4f}")
    print(
        f"held-out ({h['images']} images of seeds {h['seeds']}): exact {h['exact']:.4f}, per-shape {h['per_shape']:.4f}, "
        f"object recall {h['object_recall']:.4f}, object precision {h['object_precision']:.4f}"
    )
    print(f"wrote {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .judge import heldout_score, load_judge

    judge = load_judge(args.judge)
    score = heldout_score(judge, scenes=args.scenes, views=args.views, seed=args.seed)
    print(score.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..engine.run import invoked_command, set_threads
    from .control import ControlEvalConfig, evaluate_control, write_report

    set_threads(args.threads)
    from ..generate import ControlledPipeline

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
        from .learned import LPIPS

        learned["lpips"] = LPIPS.from_files(args.lpips_backbone, args.lpips_linear)
    if args.clip_model:
        from .learned import ClipScorer

        learned["clip"] = ClipScorer(args.clip_model)
    if args.fvd_detector:
        from .learned import load_i3d

        learned.update(fvd=load_i3d(args.fvd_detector), fvd_videos=args.fvd_videos)
    cp = ControlledPipeline.from_pretrained(args.model, args.mappers)
    extra_pipelines = {name: ControlledPipeline(cp.pipe, folder) for name, folder in extra.items()}
    report = evaluate_control(cp, cfg, extra_pipelines=extra_pipelines, progress=not args.quiet, samples_dir=f"{args.out}/samples", learned=learned)
    command = invoked_command()
    folder = write_report(report, args.out, command)
    from .control import markdown_report

    print(markdown_report(report, command))
    print(f"wrote {folder}/report.json, report.md, psnr_vs_change.png")
    return 0
