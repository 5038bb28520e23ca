"""`fourdistill reader train|eval`: train the world's reader and score a reader on held-out renders."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ..engine.config import add_common_flags

    reader = sub.add_parser(
        "reader",
        help="the world's reader: reads camera, time displacement and motion back from pixels",
        description="Train or score the world's reader, a small CNN that reads the camera (azimuth, elevation, "
        "radius) from one 64 x 64 world image, the relative camera and time displacement from a pair, and each "
        "object's motion and the direction of time from an 8-frame clip. It trains on training seeds only; seeds "
        "1000000..1000999 are held out for scoring.",
    )
    rsub = reader.add_subparsers(dest="reader_command", metavar="ACTION")

    train = rsub.add_parser("train", help="train a reader on world renders and score it on held-out scenes")
    add_common_flags(train, out_required=True)  # --config --out --resume --seed --steps --threads; the reader is OUT/checkpoint
    train.add_argument("--train-scenes", type=int, default=None, help="training scenes to render (default: ReaderTrainConfig.train_scenes)")
    train.add_argument("--pairs", type=int, default=None, help="pairs per step")
    train.add_argument("--clips", type=int, default=None, help="clips per step")
    train.add_argument("--eval-scenes", type=int, default=None, help="held-out scenes to score on")
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train)

    score = rsub.add_parser("eval", help="score a reader on renders of held-out scenes")
    score.add_argument("--reader", default=None, help="reader folder or training run (default: the shipped reader)")
    score.add_argument("--scenes", type=int, default=200, help="held-out scenes (default 200)")
    score.add_argument("--cameras", type=int, default=3, help="cameras per scene (default 3)")
    score.add_argument("--seed", type=int, default=0, help="seed for the cameras and times (default 0)")
    score.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    score.add_argument("--write", action="store_true", help="write the scores into the reader folder (config.json and its model card)")
    score.set_defaults(handler=_eval)
    reader.set_defaults(handler=lambda args: reader.print_help())


def _train(args: argparse.Namespace) -> int:
    from ..engine.config import config_from_args
    from ..engine.run import set_threads
    from ..evaluate.reader import ReaderTrainConfig, train_reader

    overrides = {
        "train_scenes": args.train_scenes,
        "pairs": args.pairs,
        "clips": args.clips,
        "eval_scenes": args.eval_scenes,
        "checkpoint_every": args.checkpoint_every,
    }
    config = config_from_args(ReaderTrainConfig, args, overrides)
    set_threads(args.threads)
    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if v is not None)
    source = f" --config {args.config}" if args.config else ""
    command = f"fourdistill reader train{source} --out {args.out} --steps {config.steps} --seed {config.seed}" + (f" {given}" if given else "")
    _, report = train_reader(config, out=args.out, progress=not args.quiet, command=command, resume=args.resume)
    t = report["training"]
    print(f"trained {t['step']} steps in {t['wall_s']:.0f} s; final loss {t['final_loss']:.4f}")
    print(_summary(report["heldout"]))
    print(f"wrote {args.out}")
    return 0


def _summary(h: dict) -> str:
    return (
        f"held-out: azimuth {h['azimuth_deg']:.2f} deg, elevation {h['elevation_deg']:.2f} deg, relative azimuth "
        f"{h['relative_azimuth_deg']:.2f} deg, |d| {h['abs_time_delta']:.4f}, motion {h['motion']:.3f}, direction {h['direction']:.3f} "
        f"(with a bounce or orbit {h['direction_directed']:.3f})"
    )


def _eval(args: argparse.Namespace) -> int:
    import time

    from ..engine.run import set_threads
    from ..evaluate.reader import SHIPPED_READER, heldout_reader_score, heldout_record, load_reader, write_heldout

    set_threads(args.threads)
    reader = load_reader(args.reader)
    started = time.perf_counter()
    score = heldout_reader_score(reader, scenes=args.scenes, cameras=args.cameras, seed=args.seed)
    print(score.summary())
    missed = [k for k, ok in score.meets().items() if not ok]
    print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")
    if args.write:
        if args.seed != 0:
            raise ValueError("--write records the card's scores, drawn with --seed 0")
        folder = write_heldout(args.reader or SHIPPED_READER, reader, heldout_record(score, args.scenes, args.cameras, time.perf_counter() - started))
        print(f"wrote {folder}/config.json and README.md")
    return 0
