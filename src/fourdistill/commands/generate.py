"""`fourdistill generate`: images with time and view control, one or a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..engine.flags import elevation_deg, finite_float, nonnegative_float, positive_int, probability, seed_int


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate with time and view control (a single image or sweeps)",
        description="Generate from a prompt and a reference image with a time displacement d in [-1, 1] "
        "and/or a view change. Defaults: the embedded stack and the shipped mappers, DPM-Solver 30 steps, "
        "guidance 5. What ships: the Time and View Mappers on the frozen U-Net; --no-mappers generates with "
        "IP-Adapter and the caption alone (no control, the same noise). Sweeps write a PNG grid (reference on the left; for --world references the true "
        "frames below, or the true grid to the right) and the frames as .mp4 and .gif. With --world the time "
        "sweep and the grid ask only for targets inside the scene's time [0, 1]: d runs from -REF_TIME to 1 - REF_TIME.",
    )
    p.add_argument("--prompt", default=None, help="caption (default with --world: the scene's caption)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", default=None, help="reference image, the model's size unless --resize (RGBA is composited over white)")
    src.add_argument("--world", type=seed_int, default=None, metavar="SEED", help="use a render of world scene SEED as the reference (held-out seeds: 1000000..1000999)")
    p.add_argument("--ref-time", type=probability, default=None, help="with --world: time of the reference render (default 0.5; 0 for --sweep grid, so d runs 0..1)")
    p.add_argument("--time", type=finite_float, default=None, help="time displacement d = t_target - t_reference in [-1, 1]")
    p.add_argument("--azimuth", type=finite_float, default=None, help="view change: azimuth in degrees")
    p.add_argument("--elevation", type=elevation_deg, default=None, help="view change: elevation in degrees")
    p.add_argument("--radius", type=finite_float, default=None, help="view change: radius in world units")
    p.add_argument("--sweep", default="none", choices=["none", "time", "view", "grid"], help="time sweep (d -1..1), view orbit (azimuth -90..90), or a time x view grid")
    p.add_argument("--frames", type=positive_int, default=None, help="sweep length (default 9; the grid is N x N with default 5)")
    p.add_argument("--model", default=None, help="diffusion stack: folder or hub id (default: the embedded stack)")
    p.add_argument("--mappers", default=None, help="mapper checkpoint folder (default: the shipped mappers)")
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=f"denoising steps (default {DEFAULT_STEPS})")
    p.add_argument("--guidance", type=nonnegative_float, default=DEFAULT_GUIDANCE, help=f"guidance scale (default {DEFAULT_GUIDANCE})")
    p.add_argument("--guidance-rescale", type=probability, default=None, metavar="R",
                   help="diffusers' guidance_rescale (Lin et al.); default: 0.7 for a zero-terminal-SNR stack, else 0")
    p.add_argument("--ip-scale", type=nonnegative_float, default=None, help="IP-Adapter scale (default: the one the mappers were distilled with)")
    p.add_argument("--seed", type=seed_int, default=0, help="noise seed (default 0)")
    p.add_argument("--resize", action="store_true", help="resize a reference of another size to the model's")
    p.add_argument("--no-mappers", action="store_true", help="no control at all: IP-Adapter and the caption alone, the same noise (the baseline)")
    p.add_argument("--fps", type=positive_int, default=4, help="frame rate of sweep videos (default 4)")
    p.add_argument("--out", default="generated.png", help="PNG to write (sweeps also write .mp4 and .gif beside it)")
    p.set_defaults(handler=generate_main)


def generate_main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..generate import REFERENCE_BACKGROUND, ControlledPipeline, ViewChange, panel, reference_to_pil, world_reference
    from ..io import check_writable, save_image, write_video

    if args.time is not None and not -1.0 <= args.time <= 1.0:  # checked here (not by argparse) so main() returns 2
        raise ValueError(f"--time {args.time:g}: the time displacement d = t_target - t_reference must lie in [-1, 1]")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: write a .png (sweeps add .mp4 and .gif beside it)")
    for path in [out] + ([out.with_suffix(".mp4"), out.with_suffix(".gif")] if args.sweep != "none" else []):
        check_writable(path, "--out", folder=False)
    cp = ControlledPipeline.from_pretrained(args.model, args.mappers)
    width, _ = cp.size
    ref = None
    image = args.image
    prompt = args.prompt
    ref_time = args.ref_time if args.ref_time is not None else (0.0 if args.sweep == "grid" else 0.5)
    if args.world is not None:
        ref = world_reference(args.world, size=width, time=ref_time)
        if args.radius is not None and ref.radius + args.radius <= 0.0:
            raise ValueError(
                f"--radius {args.radius:g}: the reference camera is at radius {ref.radius:g}, so the changed camera would be at "
                f"{ref.radius + args.radius:g}; the radius after the change must stay positive"
            )
        image = ref.image
        prompt = prompt if prompt is not None else ref.caption
    if prompt is None:
        raise ValueError("give --prompt (or --world SEED to use a world scene and its caption)")
    common = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, guidance_rescale=args.guidance_rescale, seed=args.seed, ip_adapter_scale=args.ip_scale, resize=args.resize,
                  mapped=not args.no_mappers)
    # time sweeps of a world scene ask only for targets that exist: t_ref + d in [0, 1]
    d_lo, d_hi = (-ref.time, 1.0 - ref.time) if ref is not None else (-1.0, 1.0)
    reference = None
    if image is not None:
        reference = np.asarray(reference_to_pil(image, cp.size, resize=args.resize), dtype=np.float32) / 255.0
    if args.image is not None and file_has_alpha(args.image):
        bg = ", ".join(f"{c:g}" for c in REFERENCE_BACKGROUND)
        print(f"reference {args.image} has an alpha channel: composited over white ({bg}), as the D-NeRF reader does")
    shown = reference if reference is not None else np.ones((width, width, 3), np.float32)
    view_given = any(v is not None for v in (args.azimuth, args.elevation, args.radius))
    view = ViewChange(args.azimuth or 0.0, args.elevation or 0.0, args.radius or 0.0) if view_given else None
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.sweep == "none":
        images = cp(prompt, image, time=args.time, view=view, **common)
        rows = [[images[0]]]
        if ref is not None:
            rows.append([ref.truth(args.time or 0.0, view, width)])
        save_image(out, panel(shown, rows))
        print(f"wrote {out} (reference | generated{' ; truth below' if ref is not None else ''})")
        return 0
    n = args.frames or (5 if args.sweep == "grid" else 9)
    if args.sweep == "grid":
        deltas, azimuths, grid = cp.time_view_grid(prompt, image, np.linspace(d_lo, d_hi, n), np.linspace(-90, 90, n), **common)
        rows = [list(r) for r in grid]
        if ref is not None:  # the true grid to the right, a white column between
            gap = np.ones_like(grid[0, 0])
            rows = [row + [gap] + [ref.truth(float(d), ViewChange(azimuth_deg=float(a)), width) for a in azimuths] for row, d in zip(rows, deltas)]
        save_image(out, panel(shown, rows))
        frames = grid.reshape(-1, *grid.shape[2:])
        print(f"wrote {out}: rows d = {', '.join(f'{d:+.2f}' for d in deltas)}; columns azimuth {', '.join(f'{a:+.0f}' for a in azimuths)} deg"
              + (" (the true grid to the right)" if ref is not None else ""))
    else:
        if args.sweep == "time":
            values, frames = cp.time_sweep(prompt, image, np.linspace(d_lo, d_hi, n), **common)
            truths = [ref.truth(d, None, width) for d in values] if ref is not None else None
            label = "d = " + ", ".join(f"{d:+.2f}" for d in values)
        else:
            values, frames = cp.view_orbit(prompt, image, np.linspace(-90, 90, n), **common)
            truths = [ref.truth(0.0, ViewChange(azimuth_deg=a), width) for a in values] if ref is not None else None
            label = "azimuth " + ", ".join(f"{a:+.0f}" for a in values) + " deg"
        rows = [list(frames)] + ([truths] if truths is not None else [])
        save_image(out, panel(shown, rows))
        print(f"wrote {out}: {label}{' (truth below)' if truths is not None else ''}")
    for suffix in (".mp4", ".gif"):
        write_video(out.with_suffix(suffix), frames, fps=args.fps)
    print(f"wrote {out.with_suffix('.mp4')} and {out.with_suffix('.gif')} ({len(frames)} frames)")
    return 0


def file_has_alpha(path) -> bool:
    """Whether the image file at `path` carries transparency (read from its header)."""
    from PIL import Image

    from ..generate import has_alpha

    with Image.open(path) as im:
        return has_alpha(im)
