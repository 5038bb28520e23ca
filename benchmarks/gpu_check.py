"""The GPU path in one run (under 5 minutes on one GPU): backends, mixed precision, timings.

Parts, each printing its numbers and "ok", "FAILED" or "skipped: <why>":

  1. hash grid: tiny-cuda-nn's grid ("tcnn") against the pure-PyTorch reference on the same
     CUDA table, 3D and 4D, values and table gradients (the compiled CPU kernel against the
     reference is tests/test_hash_grid.py's). Table U(-1, 1), upstream gradient N(0, 1), 2^16 points.
     Tolerance: max |difference| <= 1e-3 x max |reference| (tiny-cuda-nn computes the grid
     position with a fused multiply-add and sums gradients with atomics: float32 rounding,
     not bit-exact; see fourdistill.field.hash_grid).
  2. distillation step on the embedded stack, fp32 / fp16 / bf16 (`DistillConfig.mixed_precision`,
     each in its own process: accelerate's precision is fixed per process): the loss on one
     fixed batch (pairs, noise, timesteps) and one training step. Tolerance: the fixed-batch
     loss within 1% (fp16) and 2% (bf16) of fp32; the step's loss and mappers finite.
  3. generation on the embedded stack with the shipped mappers, fp32 / fp16 / bf16 weights:
     one image, same noise and controls. Tolerance: PSNR to the fp32 image >= 30 dB (fp16),
     >= 25 dB (bf16). (These are margins against a broken path, not precision targets: bf16 on
     a CPU gives 0.004% and 50 dB.)
  4. SD 1.5-shaped timings (random weights): benchmarks/distill_step.py --models sd15 (our
     step against a text-encoder pass per layer, and against the U-Net alone) and
     benchmarks/generate.py on an SD 1.5-shaped stack (ours against the plain pipeline), with
     absolute times; run as those scripts, in their own processes.

On a machine without CUDA the CUDA parts print "skipped: no CUDA device" and the fp32
references of parts 2 and 3 run on the CPU. The exit code is 1 when a check that ran missed its
tolerance or failed, else 0.

Run: python benchmarks/gpu_check.py [--rounds 3] [--skip-timings]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
NO_CUDA = "skipped: no CUDA device"
PRECISIONS = ("no", "fp16", "bf16")  # DistillConfig.mixed_precision; "no" is fp32
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOSS_RTOL = {"fp16": 0.01, "bf16": 0.02}
PSNR_MIN = {"fp16": 30.0, "bf16": 25.0}


class Report:
    """Lines of the check and whether every check held."""

    def __init__(self):
        self.failed: list[str] = []

    def line(self, part: str, text: str) -> None:
        print(f"[{part}] {text}", flush=True)

    def check(self, part: str, name: str, held: bool, detail: str) -> None:
        self.line(part, f"{name}: {detail}  {'ok' if held else 'FAILED'}")
        if not held:
            self.failed.append(f"{part}: {name}")

    def error(self, part: str, exc: BaseException) -> None:
        self.line(part, f"FAILED: {type(exc).__name__}: {exc}")
        self.failed.append(part)


def relative_max_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------------------ 1. hash grid
def check_hash_grid(report: Report, cuda: bool, points: int = 1 << 16) -> None:
    from fourdistill.field.hash_grid import HashGridConfig, HashGridEncoding, resolve_backend

    part = "hash grid"
    if not cuda:
        report.line(part, f"tiny-cuda-nn against the reference: {NO_CUDA}")
        return
    try:
        resolve_backend("tcnn", "cuda")
    except (RuntimeError, ValueError) as exc:
        report.line(part, f"tiny-cuda-nn against the reference: skipped: {exc}")
        return
    gen = torch.Generator().manual_seed(0)
    for dims in (3, 4):
        encs = {}
        for backend in ("tcnn", "torch"):
            enc = HashGridEncoding(HashGridConfig(n_input_dims=dims), backend=backend, seed=0)
            with torch.no_grad():
                enc.table.copy_(torch.rand(enc.table.shape, generator=torch.Generator().manual_seed(dims)) * 2 - 1)
            encs[backend] = enc.to("cuda")
        x = torch.rand(points, dims, generator=gen).to("cuda")
        upstream = torch.randn(points, encs["tcnn"].n_output_dims, generator=gen).to("cuda")
        values, grads = {}, {}
        for backend, enc in encs.items():
            out = enc(x)
            out.backward(upstream)
            values[backend], grads[backend] = out.detach(), enc.table.grad.detach()
        v_err, g_err = relative_max_error(values["tcnn"], values["torch"]), relative_max_error(grads["tcnn"], grads["torch"])
        name = f"tcnn vs reference, {dims}D, {points} points on cuda"
        report.check(part, name, v_err <= 1e-3 and g_err <= 1e-3, f"values max err {v_err:.2e}, gradients max err {g_err:.2e} (of max |ref|; <= 1e-3)")


# ------------------------------------------------------------------------------ 2. distillation step
def distill_child(precision: str, device: str) -> dict:
    """Loss on a fixed batch and one training step of the embedded stack under `precision`."""
    from fourdistill.distill import DistillConfig, Distiller
    from fourdistill.engine.loop import step_generators

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DistillConfig(mode="joint", batch_size=2, grad_accum=1, mixed_precision=precision, out=tmp, world_seeds=(0, 20))
        d = Distiller(cfg)
        assert str(d.accelerator.device).startswith(device), f"the distiller runs on {d.accelerator.device}, not {device}"
        np_rng, gen = step_generators(123, 0, 0)
        torch.manual_seed(int(np_rng.integers(2**62)))
        batch = d.sampler.batch(cfg.batch_size, rng=np_rng)
        with torch.no_grad():
            fixed = float(d.loss(batch, gen))
        start = time.perf_counter()
        step_loss = d.train_step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        finite = all(bool(torch.isfinite(p).all()) for p in d.mapper_module.parameters())
    return {"fixed_loss": fixed, "step_loss": step_loss, "mappers_finite": finite, "step_s": seconds}


def check_distill(report: Report, cuda: bool) -> None:
    part = "distill step"
    device = "cuda" if cuda else "cpu"
    results = {}
    for precision in PRECISIONS if cuda else ("no",):
        out = subprocess.run([sys.executable, __file__, "--_distill", precision, device], capture_output=True, text=True)
        if out.returncode != 0:
            report.line(part, f"{precision}: FAILED (exit {out.returncode}):\n{out.stderr[-3000:]}")
            report.failed.append(f"{part}: {precision}")
            continue
        r = results[precision] = json.loads(out.stdout.strip().splitlines()[-1])
        label = "fp32" if precision == "no" else precision
        report.check(part, f"{label} on {device}", np.isfinite(r["fixed_loss"]) and np.isfinite(r["step_loss"]) and r["mappers_finite"],
                     f"fixed-batch loss {r['fixed_loss']:.5f}, step loss {r['step_loss']:.5f}, step {r['step_s']:.2f} s, mappers finite: {r['mappers_finite']}")
    if not cuda:
        report.line(part, f"fp16 and bf16 against fp32: {NO_CUDA}")
        return
    if "no" not in results:
        return
    for precision in ("fp16", "bf16"):
        if precision in results:
            rel = abs(results[precision]["fixed_loss"] - results["no"]["fixed_loss"]) / results["no"]["fixed_loss"]
            report.check(part, f"{precision} against fp32", rel <= LOSS_RTOL[precision], f"fixed-batch loss differs by {rel:.2%} (<= {LOSS_RTOL[precision]:.0%})")


# ------------------------------------------------------------------------------ 3. generation
def check_generate(report: Report, cuda: bool, steps: int = 20) -> None:
    from fourdistill.evaluate.metrics import psnr_numpy
    from fourdistill.generate import SHIPPED_MAPPERS, ControlledPipeline, ViewChange, world_reference
    from fourdistill.teachers.image.load import load_stack

    part = "generate"
    device = "cuda" if cuda else "cpu"
    images = {}
    for precision in PRECISIONS if cuda else ("no",):
        label = "fp32" if precision == "no" else precision
        pipe = load_stack(None, ip_adapter=True, device=device, dtype=DTYPES[precision])
        pipe.set_progress_bar_config(disable=True)
        cp = ControlledPipeline(pipe, SHIPPED_MAPPERS)
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        ref = world_reference(1_000_000, size=side)
        start = time.perf_counter()
        image = cp(ref.caption, ref.image, time=0.5 if cp.has_time else None, view=ViewChange(azimuth_deg=30.0) if cp.has_view else None,
                   num_inference_steps=steps, seed=0)
        seconds = time.perf_counter() - start
        images[precision] = image
        report.check(part, f"{label} on {device}", bool(np.isfinite(image).all()), f"{image.shape[1]}x{image.shape[2]}, {steps} steps, {seconds:.2f} s, finite")
        del cp, pipe
    if not cuda:
        report.line(part, f"fp16 and bf16 against fp32: {NO_CUDA}")
        return
    for precision in ("fp16", "bf16"):
        psnr = float(psnr_numpy(images[precision], images["no"])[0])
        report.check(part, f"{precision} against fp32", psnr >= PSNR_MIN[precision], f"PSNR {psnr:.1f} dB (>= {PSNR_MIN[precision]:.0f} dB)")


# ------------------------------------------------------------------------------ 4. SD 1.5-shaped timings
def sd15_stack_folder(folder: Path) -> tuple[Path, Path]:
    """A random stack in Stable Diffusion 1.5's shapes at 256x256 (32x32 latents), the U-Net and
    text encoder of benchmarks/distill_step.py and SD 1.5's VAE, with an IP-Adapter-Plus on an
    image encoder of ViT-H's width and token count (16x16 patches: 256 tokens, as ViT-H/14 at
    224) but 4 of its 32 layers, to keep the build short: it runs once per call, the same in
    both variants. Random joint mappers for it. Returns the stack folder and the mapper folder."""
    from generate import random_mappers  # benchmarks/generate.py

    from fourdistill.teachers.image.stack import (
        ImageEncoderConfig,
        IPAdapterConfig,
        StackConfig,
        TextEncoderConfig,
        UNetConfig,
        VaeConfig,
        build_stack,
        save_stack,
    )
    from fourdistill.teachers.image.tokenizer import build_tokenizer

    cfg = StackConfig(
        resolution=256,
        text=TextEncoderConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vae=VaeConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        unet=UNetConfig(
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=2,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        image_encoder=ImageEncoderConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=4, num_attention_heads=16, patch_size=16),
        ip_adapter=IPAdapterConfig(num_tokens=16, hidden_dims=768),
    )
    stack = build_stack(cfg, build_tokenizer(folder / "tokenizer-src"), seed=0)
    saved = save_stack(stack, folder / "stack")
    return saved, random_mappers(stack, folder / "mappers")  # after saving: the mappers add their tokens to the tokenizer


def run_script(report: Report, part: str, args: list[str]) -> None:
    report.line(part, "$ python " + " ".join(args))
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    for line in out.stdout.strip().splitlines():
        report.line(part, line)
    if out.returncode != 0:
        report.line(part, f"FAILED (exit {out.returncode}):\n{out.stderr[-3000:]}")
        report.failed.append(part)


def check_timings(report: Report, cuda: bool, rounds: int) -> None:
    if not cuda:
        report.line("sd15 distill_step", NO_CUDA)
        report.line("sd15 generate", NO_CUDA)
        return
    run_script(report, "sd15 distill_step", [str(HERE / "distill_step.py"), "--models", "sd15", "--rounds", str(rounds), "--no-memory"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stack, mappers = sd15_stack_folder(Path(tmp))
        report.line("sd15 generate", f"built and saved the SD 1.5-shaped stack in {time.perf_counter() - start:.0f} s")
        run_script(report, "sd15 generate", [str(HERE / "generate.py"), "--model", str(stack), "--mappers", str(mappers), "--device", "cuda", "--rounds", str(rounds)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the SD 1.5-shaped benchmarks (default 3)")
    parser.add_argument("--skip-timings", action="store_true", help="skip part 4")
    parser.add_argument("--_distill", nargs=2, metavar=("PRECISION", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._distill:
        print(json.dumps(distill_child(*args._distill)))
        return 0
    torch.set_num_threads(min(torch.get_num_threads(), 8))
    cuda = torch.cuda.is_available()
    report = Report()
    started = time.perf_counter()
    where = torch.cuda.get_device_name(0) if cuda else "no CUDA device: CUDA parts are skipped, the CPU references run"
    print(f"gpu_check: torch {torch.__version__}, {where}", flush=True)
    parts = [("hash grid", lambda: check_hash_grid(report, cuda)), ("distill step", lambda: check_distill(report, cuda)),
             ("generate", lambda: check_generate(report, cuda))]
    if not args.skip_timings:
        parts.append(("timings", lambda: check_timings(report, cuda, args.rounds)))
    for part, fn in parts:
        part_start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one part's failure does not hide the others' results
            report.error(part, exc)
        report.line(part, f"{time.perf_counter() - part_start:.0f} s")
    print(f"gpu_check: {time.perf_counter() - started:.0f} s; " + (f"FAILED: {', '.join(report.failed)}" if report.failed else "all checks held"))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
