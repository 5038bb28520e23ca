"""`fourdistill teachers train|info|sample`: the diffusion stacks."""

from __future__ import annotations

import argparse

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..engine.config import add_common_flags


def register(sub) -> None:
    parser = sub.add_parser("teachers", help="the diffusion stacks: train the embedded one, inspect or sample any")
    tsub = parser.add_subparsers(dest="teachers_command", metavar="ACTION")
    parser.set_defaults(handler=lambda args: parser.print_help() or 0)

    train = tsub.add_parser(
        "train",
        help="train the tiny stack on world renders (VAE, then U-Net + text encoder + IP-Adapter), or a recipe of runs",
        description="Train the tiny Stable-Diffusion-layout stack with IP-Adapter on world renders. "
        "Seeded; checkpoints into OUT/checkpoint; --resume continues bit for bit. The finished stack is OUT/stack "
        "(the layout `load_stack` and StableDiffusionPipeline read). Every TrainConfig setting lives in --config FILE "
        "(JSON or YAML); a file with `runs:` is a recipe, a chain of runs into OUT/<name>/ "
        "(configs/teachers/stack.yaml is the shipped stack's; docs/teachers.md). A file with `kind: multiview` or `kind: video` "
        "fine-tunes that teacher from the image stack instead (configs/teachers/multiview.yaml, video.yaml); the finished "
        "teacher is OUT/teacher.",
    )
    add_common_flags(train, argparse.Namespace(seed=0), out_required=True)
    train.add_argument("--unet-steps", dest="steps", type=int, default=None, metavar="N",
                       help="U-Net steps, the same as --steps (default 1300); with --resume, extends the run to this many")
    train.add_argument(
        "--cooldown", type=int, default=None, metavar="K",
        help="end with K U-Net steps of linear learning-rate decay to zero (default 0: constant); with --resume, may be added to a run whose decay has not begun",
    )
    train.add_argument("--init", default=None, metavar="STACK",
                       help="start from this stack ('embedded' or a folder trained by this command): its sizes, VAE, tokenizer and prediction target; no VAE phase")
    train.add_argument("--vae-from", default=None, metavar="STACK",
                       help="a fresh run takes this stack's trained VAE ('embedded' or a folder) and builds everything else at the config's sizes")
    train.add_argument("--batch", type=int, default=None, help="U-Net batch size (default 32)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    info = tsub.add_parser("info", help="what a stack holds: parts, sizes, cross-attention layers")
    info.add_argument("model", nargs="?", default=None, help="'embedded' (default), a folder, or a hub id")
    info.set_defaults(handler=_info)

    sample = tsub.add_parser(
        "sample", help="generate images, 4-view sets or clips from captions (and held-out reference renders)",
        description="Sample a teacher. --kind image (default): one image per caption, with the held-out reference as image "
        "prompt unless --no-image-prompt. --kind multiview: a strip of 4 views 90 degrees apart per caption (held-out cameras). "
        "--kind video: one clip per caption, side by side, as --out mp4 / gif (an AnimateDiff adapter or a Zeroscope folder).",
    )
    sample.add_argument("--kind", choices=("image", "multiview", "video"), default="image", help="which teacher (default image)")
    sample.add_argument("--model", default=None, help="'embedded' (default), a folder, or a hub id (or, for multiview, an MVDream checkpoint file)")
    sample.add_argument("--base", default=None, metavar="STACK",
                        help="multiview / video: the stack whose VAE, text encoder and tokenizer the teacher uses (default: the teacher's own)")
    sample.add_argument("--caption", action="append", default=None, help="a caption (repeatable); default: held-out world captions")
    sample.add_argument("--n", type=int, default=8, help="held-out scenes when no caption is given (default 8)")
    sample.add_argument("--no-image-prompt", action="store_true", help="text only (IP-Adapter scale 0)")
    sample.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"DPM-Solver steps (default {DEFAULT_STEPS})")
    sample.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help=f"guidance scale (default {DEFAULT_GUIDANCE})")
    sample.add_argument("--guidance-rescale", type=float, default=None, metavar="R",
                        help="rescale the guided prediction towards the conditional one's spread (diffusers' guidance_rescale, Lin et al.); "
                        "default: 0.7 for a zero-terminal-SNR stack, else 0")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--evaluate", action="store_true", help="also print the held-out scores: image: text-to-image judge accuracy and image-prompt PSNR; "
                        "multiview: the reader's view order and the judge's objects per view, against the true renders'")
    sample.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own; 1 keeps a shared CPU responsive)")
    sample.add_argument("--out", required=True, help="PNG grid to write (video: an mp4, webm, avi or gif)")
    sample.set_defaults(handler=_sample)


def _train(args: argparse.Namespace) -> int:
    from ..engine.config import ConfigError, config_from_dict, read_config_file
    from ..engine.run import invoked_command
    from ..evaluate.stack import write_sample_grid
    from ..teachers.image.recipe import is_recipe, run_recipe
    from ..teachers.image.train import TrainConfig, saved_config, train

    flags = {"seed": args.seed, "threads": args.threads, "unet_steps": args.steps, "cooldown_steps": args.cooldown,
             "init_from": args.init, "vae_from": args.vae_from, "batch": args.batch}
    command = invoked_command()
    if args.config and "kind" in read_config_file(args.config):
        return _finetune(args, flags, command)
    if args.config and is_recipe(read_config_file(args.config)):
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise ConfigError(f"{args.config}: a recipe takes every setting from its runs; set {given[0]} there (flags apply to a single run)")
        run_recipe(args.config, args.out, resume=args.resume, progress=not args.no_progress, sample_grid=write_sample_grid, command=command)
        return 0
    if args.config:
        data, where = read_config_file(args.config), str(args.config)
    elif args.resume:
        data, where = saved_config(args.out).to_dict(), "flags"  # the run's own settings; flags may extend it
    else:
        data, where = {}, "flags"
    # the flags join the file's settings before they are checked together (--init makes a file's
    # decoder_steps valid, say)
    data.update({k: v for k, v in flags.items() if v is not None})
    cfg = config_from_dict(TrainConfig, data, where)
    train(args.out, cfg, resume=args.resume, progress=not args.no_progress, sample_grid=write_sample_grid, command=command)
    return 0


def _finetune(args: argparse.Namespace, flags: dict, command: str | None) -> int:
    """A multi-view or video teacher run (teachers.finetune): the file's settings, then
    --steps, --seed, --threads and --batch on top; --resume with the run's own settings."""
    from ..engine.config import ConfigError, config_from_dict, read_config_file
    from ..evaluate.teachers import score_teacher
    from ..teachers.finetune import FinetuneConfig, finetune

    image_only = [k for k in ("cooldown_steps", "init_from", "vae_from") if flags[k] is not None]
    if image_only:
        flag = {"cooldown_steps": "--cooldown", "init_from": "--init", "vae_from": "--vae-from"}[image_only[0]]
        raise ConfigError(f"{flag}: applies to the image stack; a {read_config_file(args.config)['kind']} teacher sets it in {args.config}")
    data = read_config_file(args.config)
    data.update({k: v for k, v in {"steps": flags["unet_steps"], "seed": flags["seed"], "threads": flags["threads"],
                                   "batch": flags["batch"]}.items() if v is not None})
    cfg = config_from_dict(FinetuneConfig, data, str(args.config))
    teacher = finetune(args.out, cfg, resume=args.resume, progress=not args.no_progress, command=command, score=score_teacher)
    print(f"wrote {teacher}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..teachers.image.load import describe_stack, load_stack

    pipe = load_stack(args.model)
    for line in describe_stack(pipe):
        print(line)
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.kind == "multiview":
        return _sample_multiview(args)
    if args.kind == "video":
        return _sample_video(args)
    import numpy as np

    from ..io import image_grid, save_image
    from ..evaluate.stack import evaluate_stack, generate, held_out_references
    from ..teachers.image.load import load_stack

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    pipe = load_stack(args.model)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if args.caption:
        captions, refs = args.caption, None
    else:
        ref = held_out_references(args.n, size, args.seed)
        captions, refs = ref.captions, (None if args.no_image_prompt else ref.rgb)
    images = generate(pipe, captions, refs, 0.0 if args.no_image_prompt else 1.0, args.steps, args.guidance, args.seed, guidance_rescale=args.guidance_rescale)
    rows = images if refs is None else np.concatenate([refs, images])
    save_image(args.out, image_grid(rows, rows=1 if refs is None else 2))
    for i, c in enumerate(captions):
        print(f"{i}: {c}")
    print(f"wrote {args.out}")
    if args.evaluate:
        q = evaluate_stack(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance, guidance_rescale=args.guidance_rescale)
        for k, v in q.to_dict().items():
            print(f"{k}: {v}")
    return 0


def _sample_multiview(args: argparse.Namespace) -> int:
    import torch

    from ..evaluate.teachers import evaluate_multiview, evaluation_cameras
    from ..io import image_grid, save_image
    from ..teachers.load import load_teacher
    from ..teachers.multiview.train import sample_views

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    teacher = load_teacher("multiview", args.model, **({"base": args.base} if args.base else {}))
    if args.caption:
        captions = args.caption
    else:
        from ..world import EVAL_SEEDS, make_scene

        captions = [make_scene(s).caption for s in EVAL_SEEDS[: args.n]]
    c2w, azimuths, _ = evaluation_cameras(len(captions), teacher.parts.resolution, args.seed, teacher.num_views)
    images = sample_views(teacher, captions, c2w, args.steps, args.guidance, args.guidance_rescale, args.seed)
    save_image(args.out, image_grid(images.flatten(0, 1).numpy(), rows=len(captions)))
    for i, c in enumerate(captions):
        print(f"{i}: {c} (azimuths {', '.join(f'{a:.0f}' for a in azimuths[i])})")
    print(f"wrote {args.out}")
    if args.evaluate:
        q = evaluate_multiview(teacher, args.n, seed=args.seed, steps=args.steps, guidance=args.guidance)
        for k, v in q.items():
            print(f"{k}: {v}")
    return 0


def _sample_video(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..io import VIDEO_SUFFIXES, check_writable
    from ..teachers.load import load_teacher
    from ..teachers.video.sample import sample_clips, write_clips

    if Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out {args.out}: a video teacher writes a video; name a {', '.join(VIDEO_SUFFIXES)} file")
    if args.evaluate:
        raise ValueError("--evaluate: the video teacher's held-out scores are not measured by this command")
    check_writable(args.out, folder=False)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    teacher = load_teacher("video", args.model, **({"base": args.base} if args.base else {}))
    if args.caption:
        captions = args.caption
    else:
        from ..world import EVAL_SEEDS, make_scene

        captions = [make_scene(s).caption for s in EVAL_SEEDS[: args.n]]
    clips = sample_clips(teacher, captions, steps=args.steps, guidance=args.guidance, guidance_rescale=args.guidance_rescale, seed=args.seed)
    write_clips(args.out, clips)
    for i, c in enumerate(captions):
        print(f"{i}: {c}")
    print(f"wrote {args.out} ({clips.shape[1]} frames)")
    return 0
