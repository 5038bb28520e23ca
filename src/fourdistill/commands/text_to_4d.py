"""`fourdistill text-to-4d CAPTION --out RUN`: a 4D scene from a caption (4D-fy's hybrid score distillation)."""

from __future__ import annotations

import argparse

from ..engine.flags import seed_int


def register(sub) -> None:
    parser = sub.add_parser(
        "text-to-4d",
        help="generate a 4D scene (a hash-grid field over x, y, z, t) from a caption by hybrid score distillation",
        description="Generate a 4D field from a caption with 4D-fy's recipe (Bahmani et al. 2024): three stages "
        "(static with the multi-view teacher; static with multi-view and image; dynamic with all three, the video "
        "teacher training the motion), one teacher drawn per step. Shows a progress bar with each teacher's loss, "
        "writes previews to OUT/previews every preview_every steps, and at the end OUT/grid.png (times x orbit) and "
        "OUT/orbit.mp4. OUT/checkpoint is a field: `fourdistill inspect OUT` and `fourdistill distill --source OUT` "
        "read it. Settings: TextTo4DConfig (src/fourdistill/sds/text_to_4d.py), whose defaults are the embedded preset "
        "(configs/text_to_4d/embedded.yaml); configs/text_to_4d/fourdfy-paper.yaml is the paper's, for a GPU with real weights.",
    )
    parser.add_argument("caption", help='what to generate, e.g. "a red cube spinning next to a blue ball"')
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", metavar="FILE", default=None, help="settings from a JSON or YAML file (a preset in configs/text_to_4d/)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly (same settings)")
    parser.add_argument("--seed", type=seed_int, default=None, help="seed of everything random (default: TextTo4DConfig.seed)")
    parser.add_argument("--image-teacher", default=None, metavar="MODEL",
                        help="'embedded', a Stable Diffusion folder or hub id (default: TextTo4DConfig.image_teacher)")
    parser.add_argument("--multiview-teacher", default=None, metavar="MODEL",
                        help="'embedded', an MVDream-layout folder, MVDream's original .pt file, or a hub id")
    parser.add_argument("--video-teacher", default=None, metavar="MODEL",
                        help="'embedded', a motion-adapter folder, a Zeroscope folder, or a hub id")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from ..engine.config import ConfigError, config_from_dict, config_to_dict, read_config_file
    from ..engine.run import check_writable, invoked_command
    from ..sds.text_to_4d import TextTo4DConfig, generate_4d

    check_writable(args.out, "--out")
    data = read_config_file(args.config) if args.config else config_to_dict(TextTo4DConfig())
    where = str(args.config) if args.config else "flags"
    if args.config and "caption" in data:
        raise ConfigError(f"{args.config}: caption: give the caption on the command line, not in the preset")
    flags = {"caption": args.caption, "seed": args.seed, "image_teacher": args.image_teacher,
             "multiview_teacher": args.multiview_teacher, "video_teacher": args.video_teacher, "threads": args.threads}
    data.update({k: v for k, v in flags.items() if v is not None})
    cfg = config_from_dict(TextTo4DConfig, data, where)
    ckpt = generate_4d(args.out, cfg, resume=args.resume, progress=not args.no_progress, command=invoked_command(),
                       on_preview=None if not args.no_progress else (lambda p: print(f"preview {p}")))
    print(f"wrote {ckpt} (a 4D field: fourdistill inspect {args.out}), {args.out}/grid.png and {args.out}/orbit.mp4")
    return 0
