"""`fourdistill inspect PATH`: print what a 4D source holds and any problems found."""

from __future__ import annotations

import argparse
import dataclasses
import json
from ..engine.flags import positive_int


def register(sub) -> None:
    parser = sub.add_parser(
        "inspect",
        help="print what a 4D source holds: kind, frames, time range, cameras, resolution, problems",
        description="Open a 4D source (a video, a folder of frames, a D-NeRF folder, a nerfstudio capture "
        "or world:SEED) and print what it holds. Every image is decoded once, so a damaged file is found here. "
        "Bad data is reported with the file and field at fault.",
    )
    parser.add_argument("path", metavar="PATH", help="video file, folder, transforms.json or world:SEED")
    parser.add_argument("--split", choices=("train", "val", "test", "all"), default=None, help="D-NeRF split (default train)")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="videos and frame folders: keep at most this many frames")
    parser.add_argument("--stride", type=positive_int, default=None, help="videos and frame folders: keep every k-th frame")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=inspect_main)


def inspect_main(args: argparse.Namespace) -> int:
    from ..sources import open_source

    options = {"split": args.split, "max_frames": args.max_frames, "stride": args.stride}
    source = open_source(args.path, **{k: v for k, v in options.items() if v is not None})
    verify = getattr(source, "verify_images", None)
    if verify is not None:  # the headers were read at open; a truncated file shows only when decoded
        verify()
    summary = source.summary()
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0
