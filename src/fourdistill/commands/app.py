"""`fourdistill app`: the interactive demo, a local web page (needs the `app` extra)."""

from __future__ import annotations

import argparse
import importlib.util

HOST = "127.0.0.1"
PORT = 7860
STEPS = 20  # the page's starting denoising steps (fourdistill.app.DEFAULT_STEPS)


def register(sub) -> None:
    p = sub.add_parser(
        "app",
        help="start the interactive demo: a local web page with time and view control and a field viewer",
        description="Start a local web page on the embedded default (or --model / --mappers): tab Control "
        "generates with time and view sliders from a held-out world scene or an uploaded image, beside the "
        "true target, and sweeps the time x view grid with its video; tab Field renders a fitted or generated "
        "field at any time and camera. Binds to 127.0.0.1 unless --host says otherwise; never shared publicly. "
        'Needs the app extra: pip install -e ".[app]".',
    )
    p.add_argument("--host", default=HOST, help=f"address to bind (default {HOST}: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=PORT, help=f"port (default {PORT})")
    p.add_argument("--model", default=None, help="diffusion stack: folder or hub id (default: the embedded stack)")
    p.add_argument("--mappers", default=None, help="mapper checkpoint folder (default: the shipped mappers)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"denoising steps the page starts with (default {STEPS})")
    p.add_argument("--field", default=None, metavar="FOLDER", help="field folder to put in the Field tab's path box")
    p.add_argument("--no-preload", action="store_true", help="load the model on the first Generate instead of at start")
    p.set_defaults(handler=app_main)


def app_main(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must lie in 1..65535, got {args.port}")
    if not 1 <= args.steps <= 1000:
        raise ValueError(f"--steps must lie in 1..1000, got {args.steps}")
    if not args.host.strip():
        raise ValueError("--host is empty: give an address such as 127.0.0.1")
    if importlib.util.find_spec("gradio") is None:
        raise ValueError('the demo needs gradio, an optional dependency: pip install -e ".[app]"')
    from ..app import serve

    serve(args.host, args.port, args.model, args.mappers, args.steps, args.field, preload=not args.no_preload)
    return 0
