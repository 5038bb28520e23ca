"""Time of generation with mappers against the plain pipeline, same model, steps, size and batch.

Both runs use the same StableDiffusionPipeline with its IP-Adapter and the same reference image:
  plain: `pipe(prompt, ip_adapter_image=reference, ...)`;
  ours:  `ControlledPipeline(pipe, mappers)(prompt, reference, time=d, view=...)`, i.e. per-step,
         per-layer conditions from one batched text-encoder pass, fed through layer-aware
         attention processors.
A third variant is the plain call through the layer-aware processors alone. The three alternate in
one process (plain, processors, ours, plain, ... after a warm-up of each, on two copies of the
stack so the plain one never sees our processors); each ratio is taken within a round and
printed as its median and spread over the rounds.

Run: python benchmarks/generate.py [--model FOLDER_OR_HUB_ID] [--mappers FOLDER] [--steps 30]
     [--batch 1] [--rounds 5] [--device cpu|cuda]
Default: the embedded stack and the shipped mappers (random mappers of the same shape when none
are shipped: the cost does not depend on the weights).
Goal (generation issue): ours <= 1.10x plain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import add_rounds_argument, alternate, print_ratio, print_times


def random_mappers(pipe, folder: Path) -> Path:
    """Joint mappers with random weights, in the shape distillation would give."""
    from fourdistill.conditioning.processors import cross_attention_layers
    from fourdistill.conditioning.text import MappedTextConditioner
    from fourdistill.mappers.checkpoint import save_mappers
    from fourdistill.mappers.neti import MapperConfig, TimeMapper, ViewMapper

    layers = cross_attention_layers(pipe.unet)
    width = pipe.text_encoder.config.hidden_size
    tm = TimeMapper(MapperConfig(kind="time", word_dim=width, n_layers=len(layers)))
    vm = ViewMapper(MapperConfig(kind="view", word_dim=width, n_layers=len(layers), encoding_seed=1))
    cond = MappedTextConditioner(pipe.text_encoder, pipe.tokenizer, len(layers), tm, vm)
    return save_mappers(folder, cond, layers, base_model="benchmark")


def main() -> int:
    from fourdistill.diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="stack folder or hub id (default: the embedded stack)")
    parser.add_argument("--mappers", default=None, help="mapper folder (default: shipped, else random ones)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    add_rounds_argument(parser, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1: tiny models on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import torch

    from fourdistill.generate import SHIPPED_MAPPERS, ControlledPipeline, ViewChange, world_reference
    from fourdistill.teachers.image.load import load_stack

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    pipe = load_stack(args.model, ip_adapter=True, device=args.device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    ref = world_reference(1_000_000, size=side)
    reference = [(np.clip(ref.image, 0, 1) * 255 + 0.5).astype(np.uint8)] * args.batch
    from PIL import Image

    pils = [Image.fromarray(r) for r in reference]
    prompts = [ref.caption] * args.batch

    # two copies of the stack: the plain one never gets the mappers' processors, so all three
    # variants can alternate in one run
    plain_pipe = load_stack(args.model, ip_adapter=True, device=args.device, dtype=dtype)
    plain_pipe.set_progress_bar_config(disable=True)

    with tempfile.TemporaryDirectory() as tmp:
        mappers = args.mappers
        if mappers is None:
            mappers = SHIPPED_MAPPERS if (SHIPPED_MAPPERS / "mappers.json").is_file() else random_mappers(pipe, Path(tmp) / "mappers")
        cp = ControlledPipeline(pipe, mappers)

        def run_plain(p):
            def call():
                p.set_ip_adapter_scale(0.5)
                p(prompts, ip_adapter_image=[pils], num_inference_steps=args.steps, guidance_scale=args.guidance,
                  height=side, width=side, generator=torch.Generator().manual_seed(0), output_type="np")
            return call

        def ours():
            cp(prompts, pils if args.batch > 1 else pils[0], time=0.5, view=ViewChange(azimuth_deg=30.0) if cp.has_view else None,
               num_inference_steps=args.steps, guidance_scale=args.guidance, ip_adapter_scale=0.5)

        # "processors": the plain call through the layer-aware processors that ControlledPipeline
        # installed (they read no layer_conditions here, so this is the plain computation)
        variants = {"plain": run_plain(plain_pipe), "processors": run_plain(pipe), "ours": ours}
        sync = torch.cuda.synchronize if args.device == "cuda" else None
        timings = alternate(variants, rounds=args.rounds, warmup=1, unit="call", sync=sync)

    print(f"model: {args.model or 'embedded'}  {side}x{side}, {args.steps} steps, guidance {args.guidance}, batch {args.batch}, "
          f"device {args.device}; variants alternated over {args.rounds} rounds after a warm-up")
    print_times(timings, labels={"plain": "plain pipeline (diffusers)", "processors": "plain, layer-aware processors",
                                 "ours": "ours (time + view mappers)"})
    print_ratio(timings, "processors", "plain", "plain through our processors / plain")
    print_ratio(timings, "ours", "plain", "ours / plain", at_most=1.10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
