"""Time and peak memory of one distillation training step, ours against two references.

Three step variants on the same U-Net, text encoder and batch, measured in one run:

  (a) U-Net forward + backward alone, with a fixed text condition (the floor: what any
      method that conditions the U-Net through its text input pays);
  (b) the per-layer formulation of NeTI and the 4Distillation reference: one text-encoder
      pass per cross-attention layer, then the U-Net;
  ours: one batched text-encoder pass for all layers (`MappedTextConditioner`), then the U-Net.

Models: the embedded stack (if shipped) and a Stable Diffusion 1.5-shaped U-Net and CLIP text
encoder with random weights at 256x256 (32x32 latents), built offline from the published
configurations (opt-in: a step takes over a minute on a CPU).

The three variants are alternated in one process (a, b, ours, a, b, ours, ... after a warm-up of
each), and every ratio is taken within a round and printed as its median and spread over the
rounds. Peak memory is measured apart, each variant alone in its own process, so its peak
resident memory (CPU) or peak allocated memory (CUDA) is its own.

Run: python benchmarks/distill_step.py [--models embedded sd15] [--batch 3] [--rounds 5] [--threads 1] [--no-memory]
Goal (distillation issue): ours <= 0.7x of (b); the overhead of ours over (a) is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _timing import add_rounds_argument, alternate, print_ratio, print_times


def sd15_models():
    """U-Net and text encoder in Stable Diffusion 1.5's published shapes, random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=32,  # 256x256 images
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    return unet, text, 77


def embedded_models():
    from fourdistill.teachers.image.load import load_stack

    pipe = load_stack(None, ip_adapter=False)
    return pipe.unet, pipe.text_encoder, pipe.tokenizer.model_max_length


def build_steps(model: str, batch: int, threads: int) -> tuple[dict, dict]:
    """One training-step callable per variant, on shared models and batch; and run facts."""
    import torch

    torch.set_num_threads(threads)

    from fourdistill.conditioning.processors import install_layer_processors
    from fourdistill.conditioning.text import bypass, substituted_embeddings
    from fourdistill.mappers.neti import MapperConfig, TimeMapper

    torch.manual_seed(0)
    unet, text, seq = sd15_models() if model == "sd15" else embedded_models()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    unet.to(device).requires_grad_(False)
    text.to(device).requires_grad_(False)
    layers = install_layer_processors(unet)
    n_l = len(layers)
    width = text.config.hidden_size
    vocab = text.config.vocab_size
    placeholder = vocab - 1
    ids = torch.randint(0, vocab - 2, (batch, seq), device=device)
    ids[:, 1] = placeholder
    size = unet.config.sample_size
    latents = torch.randn(batch, unet.config.in_channels, size, size, device=device)
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (batch,), device=device)
    d = torch.rand(batch, 1, device=device) * 2 - 1
    fixed = torch.randn(batch, seq, width, device=device, requires_grad=True)

    def encode(ids_, v_base, v_bypass):
        with substituted_embeddings(text, {placeholder: v_base}):
            enc = text(ids_).last_hidden_state
        rows = torch.arange(len(ids_), device=device)
        at = enc[rows, 1]
        return enc.index_put((rows, torch.ones_like(rows)), bypass(at, v_bypass, 0.2))

    def make_step(variant: str):
        mapper = TimeMapper(MapperConfig(kind="time", word_dim=width, n_layers=n_l)).to(device).train()
        opt = torch.optim.AdamW(mapper.parameters(), lr=1e-3)

        def step():
            if variant == "a":
                conds = fixed.expand(n_l, -1, -1, -1)
            elif variant == "b":  # a text-encoder pass per layer
                per_layer = []
                for layer in range(n_l):
                    vb, vp = mapper(t, torch.full_like(t, layer), d)
                    per_layer.append(encode(ids, vb, vp))
                conds = torch.stack(per_layer)
            else:  # ours: every layer in one batched pass
                layer_idx = torch.arange(n_l, device=device).repeat_interleave(batch)
                vb, vp = mapper(t.repeat(n_l), layer_idx, d.repeat(n_l, 1))
                conds = encode(ids.repeat(n_l, 1), vb, vp).reshape(n_l, batch, seq, width)
            pred = unet(latents, t, encoder_hidden_states=conds[0], cross_attention_kwargs={"layer_conditions": conds}).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    sync = torch.cuda.synchronize if device == "cuda" else None
    return {v: make_step(v) for v in VARIANTS}, {"layers": n_l, "device": device, "sync": sync}


def peak_memory_mb(model: str, variant: str, batch: int, threads: int) -> float:
    """Peak memory of one variant alone (run in its own process): resident set on CPU,
    allocated memory on CUDA, over a warm-up step and one more step."""
    import torch

    steps, facts = build_steps(model, batch, threads)
    if facts["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        steps[variant]()
    if facts["device"] == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


VARIANTS = ("a", "b", "ours")
LABELS = {"a": "(a) U-Net fwd+bwd, fixed text", "b": "(b) text-encoder pass per layer", "ours": "ours: one batched pass"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["embedded"], choices=["embedded", "sd15"],
                        help="embedded (default; seconds) and/or sd15 (random SD 1.5 shapes; over a minute per step on a CPU)")
    parser.add_argument("--batch", type=int, default=3, help="pairs per step (reference: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1: steadier times on a shared CPU)")
    add_rounds_argument(parser, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    parser.add_argument("--_child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps({"peak_mb": peak_memory_mb(args._child[0], args._child[1], args.batch, args.threads)}))
        return
    for model in args.models:
        peak = {}
        if not args.no_memory:
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--_child", model, variant, "--batch", str(args.batch), "--threads", str(args.threads)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{model}/{variant} failed:\n{out.stderr[-2000:]}")
                peak[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        steps, facts = build_steps(model, args.batch, args.threads)
        timings = alternate(steps, rounds=args.rounds, warmup=1, unit="step", sync=facts["sync"])
        print(f"\n{model}: {facts['layers']} cross-attention layers, batch {args.batch}, device {facts['device']} (torch threads: {args.threads}), "
              f"variants alternated over {args.rounds} rounds after a warm-up")
        print_times(timings, list(VARIANTS), LABELS)
        if peak:
            print("  peak MB (each variant alone in its own process): " + ", ".join(f"{v} {peak[v]:.0f}" for v in VARIANTS))
        print_ratio(timings, "ours", "b", "ours / (b)", at_most=0.70)
        print_ratio(timings, "ours", "a", "ours / (a), the overhead of the mapped text condition")


if __name__ == "__main__":
    main()
