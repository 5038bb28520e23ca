"""`fourdistill judge train|eval`: train the world's judge and score a judge on held-out renders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import add_common_flags
from ..engine.flags import HELD_OUT_SCENES, at_most, check_settings, positive_int, seed_int

# JudgeTrainConfig fields held to their flag's rule wherever they come from (a --config file too).
SETTING_TYPES = {
    "steps": positive_int, "seed": seed_int, "batch_size": positive_int, "train_scenes": positive_int, "views_per_scene": positive_int,
    "eval_scenes": at_most(HELD_OUT_SCENES, "the held-out world scenes"), "eval_views": positive_int, "checkpoint_every": positive_int,
}


def register(sub) -> None:
    judge = sub.add_parser(
        "judge",
        help="the world's judge: a small classifier that reads object shapes and colours",
        description="Train or score the world's judge, a small CNN that reads which shapes a 64 x 64 world "
        "image shows and in which colour. It trains on training seeds only; seeds 1000000..1000999 are "
        "held out for scoring.",
    )
    jsub = judge.add_subparsers(dest="judge_command", metavar="ACTION")

    train = jsub.add_parser("train", help="train a judge on world renders and score it on held-out scenes")
    add_common_flags(train, "JudgeTrainConfig", out_required=True)  # --config --out --resume --seed --steps --threads; the judge is OUT/checkpoint
    train.add_argument("--batch-size", type=positive_int, default=None, help="images per step (default: JudgeTrainConfig.batch_size)")
    train.add_argument("--train-scenes", type=positive_int, default=None, help="training scenes to render (default: JudgeTrainConfig.train_scenes)")
    train.add_argument("--views-per-scene", type=positive_int, default=None, help="random views per training scene")
    train.add_argument("--eval-scenes", type=at_most(HELD_OUT_SCENES, "the held-out world scenes"), default=None, help="held-out scenes to score on")
    train.add_argument("--eval-views", type=positive_int, default=None, help="views per held-out scene")
    train.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=train_main)

    score = jsub.add_parser("eval", help="score a judge on renders of held-out scenes")
    score.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    score.add_argument("--scenes", type=at_most(HELD_OUT_SCENES, "the held-out world scenes"), default=200, help="held-out scenes (default 200)")
    score.add_argument("--views", type=positive_int, default=4, help="random views per scene (default 4)")
    score.add_argument("--seed", type=seed_int, default=0, help="seed for the views' cameras and times (default 0)")
    score.set_defaults(handler=eval_main)
    judge.set_defaults(handler=lambda args: judge.print_help())


def train_main(args: argparse.Namespace) -> int:
    from ..engine.config import config_from_args
    from ..engine.run import check_writable, set_threads
    from ..engine.checkpoint import verify_checkpoint
    from ..evaluate.judge import CHECKPOINT_DIR, CONFIG_NAME, WEIGHTS_NAME, JudgeTrainConfig, train_judge

    overrides = {
        "batch_size": args.batch_size,
        "train_scenes": args.train_scenes,
        "views_per_scene": args.views_per_scene,
        "eval_scenes": args.eval_scenes,
        "eval_views": args.eval_views,
        "checkpoint_every": args.checkpoint_every,
    }
    config = config_from_args(JudgeTrainConfig, args, overrides)
    check_settings(config, SETTING_TYPES, args.config or "flags")
    check_writable(args.out, "--out")
    if args.resume:  # a damaged checkpoint is named before the run folder is touched
        verify_checkpoint(Path(args.out) / CHECKPOINT_DIR, weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME)
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


def eval_main(args: argparse.Namespace) -> int:
    from ..evaluate.judge import heldout_score, load_judge

    judge = load_judge(args.judge)
    score = heldout_score(judge, scenes=args.scenes, views=args.views, seed=args.seed)
    print(score.summary())
    return 0
