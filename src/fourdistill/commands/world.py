"""`fourdistill world show|export` and `fourdistill demo`: render and export procedural scenes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from ..engine.flags import finite_float, nonnegative_int, positive_int, seed_int


def register(sub) -> None:
    world = sub.add_parser(
        "world",
        help="render and export procedural 4D world scenes (the embedded default source)",
        description="Procedural 4D scenes with exact ground truth. Scenes are a pure function of the seed; "
        "seeds 1000000..1000999 are reserved for evaluation.",
    )
    wsub = world.add_subparsers(dest="world_command", metavar="ACTION")

    show = wsub.add_parser("show", help="print a scene's caption and objects, and save a time x view grid PNG")
    show.add_argument("--seed", type=seed_int, default=0, help="scene seed (default 0)")
    show.add_argument("--out", default=None, help="PNG path for the time x view grid (default: world_SEED.png)")
    show.add_argument("--resolution", type=positive_int, default=96, help="pixels per grid cell (default 96)")
    show.add_argument("--times", type=positive_int, default=5, help="columns: evenly spaced times in [0, 1] (default 5)")
    show.add_argument("--views", type=positive_int, default=4, help="rows: evenly spaced azimuths (default 4)")
    show.set_defaults(handler=show_main)

    export = wsub.add_parser("export", help="export a scene to a D-NeRF folder and/or a video")
    export.add_argument("--seed", type=seed_int, default=0, help="scene seed (default 0)")
    export.add_argument("--dnerf", default=None, help="D-NeRF folder to write (transforms_*.json + RGBA PNGs)")
    export.add_argument("--video", default=None, help="video to write: .mp4, .webm, .avi or .gif")
    export.add_argument("--resolution", type=positive_int, default=64, help="image size in pixels (default 64)")
    export.add_argument("--train", type=nonnegative_int, default=50, help="D-NeRF training views (default 50)")
    export.add_argument("--val", type=nonnegative_int, default=10, help="D-NeRF validation views (default 10)")
    export.add_argument("--test", type=nonnegative_int, default=20, help="D-NeRF test views (default 20)")
    export.add_argument("--frames", type=positive_int, default=48, help="video frames over t = 0..1 (default 48)")
    export.add_argument("--fps", type=positive_int, default=24, help="video frame rate (default 24)")
    export.add_argument("--orbit-deg", type=finite_float, default=0.0, help="video camera sweep in azimuth degrees (default 0: fixed)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing D-NeRF folder")
    export.set_defaults(handler=export_main)

    demo = sub.add_parser(
        "demo",
        help="the main job on the embedded default: render a held-out world scene, export it, summarise it",
        description="Render a held-out world scene as a time x view grid, export it to a D-NeRF folder, "
        "an mp4 and a gif, then read the export back as a 4D source and print what it holds.",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--seed", type=seed_int, default=None, help="scene seed (default: the first evaluation seed)")
    demo.set_defaults(handler=demo_main)
    world.set_defaults(handler=lambda args: world.print_help())


def time_view_grid(scene, resolution: int, n_times: int, n_views: int):
    """Renders of `scene` as one image: rows are views (azimuths 30 degrees apart from 30,
    elevation 25), columns times evenly spaced over [0, 1]; each cell resolution x resolution."""
    import numpy as np

    from ..cameras import orbit_camera
    from ..io import image_grid
    from ..world import DEFAULT_ORBIT, render_views

    r = float(np.mean(DEFAULT_ORBIT.radius))
    cams, times = [], []
    for az in np.linspace(-180.0, 180.0, n_views, endpoint=False) + 30.0:
        for t in np.linspace(0.0, 1.0, n_times):
            cams.append(orbit_camera(az, 25.0, r, DEFAULT_ORBIT.fov_x_deg, resolution, resolution))
            times.append(t)
    return image_grid(render_views(scene, cams, times)["rgb"], rows=n_views)


def describe(scene) -> list[str]:
    """A scene's seed, caption and objects, one line each."""
    lines = [f"seed:     {scene.seed}", f"caption:  {scene.caption}"]
    for o in scene.objects:
        lines.append(f"object:   {o.color_name} {o.shape}, {o.motion}, size {o.size:.2f}, at ({o.anchor[0]:+.2f}, {o.anchor[1]:+.2f})")
    return lines


def show_main(args: argparse.Namespace) -> int:
    from ..io import check_writable, save_image
    from ..world import make_scene

    out = args.out or f"world_{args.seed}.png"
    check_writable(out, "--out", folder=False)
    scene = make_scene(args.seed)
    save_image(out, time_view_grid(scene, args.resolution, args.times, args.views))
    print("\n".join(describe(scene)))
    print(f"grid:     {out} (rows: views, columns: time 0 -> 1)")
    return 0


def export_main(args: argparse.Namespace) -> int:
    from ..io import check_writable
    from ..world import make_scene
    from ..world.export import export_dnerf, export_video

    if not args.dnerf and not args.video:
        raise ValueError("nothing to export: pass --dnerf FOLDER and/or --video FILE")
    if args.dnerf:
        if Path(args.dnerf).exists() and not args.overwrite:
            raise ValueError(f"--dnerf {args.dnerf}: already exists; pass --overwrite to replace it or choose another folder")
        check_writable(args.dnerf, "--dnerf")
    if args.video:
        check_writable(args.video, "--video", folder=False)
    scene = make_scene(args.seed)
    if args.dnerf:
        export_dnerf(scene, args.dnerf, args.resolution, args.train, args.val, args.test, overwrite=args.overwrite)
        print(f"D-NeRF folder: {args.dnerf}")
    if args.video:
        export_video(scene, args.video, args.frames, args.fps, args.resolution, args.orbit_deg)
        print(f"video: {args.video}")
    return 0


def demo_main(args: argparse.Namespace) -> int:
    from ..io import check_writable, save_image
    from ..sources import open_source
    from ..world import EVAL_SEEDS, make_scene
    from ..world.export import export_dnerf, export_video

    start = time.perf_counter()
    out = check_writable(args.out, "--out")
    seed = EVAL_SEEDS[0] if args.seed is None else args.seed
    scene = make_scene(seed)
    print("\n".join(describe(scene)))
    save_image(out / "grid.png", time_view_grid(scene, 96, 5, 4))
    export_dnerf(scene, out / "dnerf", resolution=64, overwrite=True)
    export_video(scene, out / "scene.mp4", resolution=128)
    export_video(scene, out / "scene.gif", n_frames=24, fps=12, resolution=96, azimuth_span_deg=90.0)
    print(f"wrote:    {out / 'grid.png'} (rows: views, columns: time 0 -> 1)")
    print(f"wrote:    {out / 'dnerf'} (D-NeRF folder), {out / 'scene.mp4'}, {out / 'scene.gif'}")
    print("\nThe export read back as a 4D source:")
    print("\n".join(open_source(out / "dnerf").summary().lines()))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0
