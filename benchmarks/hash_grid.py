"""Points per second of the hash-grid encoding, per backend, 3D and 4D, forward and forward+backward,
beside the machine's random-gather ceiling.

Run: python benchmarks/hash_grid.py [--points 262144] [--reference-points 32768] [--repeats 3]

Sizes are 4D-fy's (method notes 2.1): 16 levels x 2 features, 2^19 rows per level, base
resolution 16, per-level scale 1.447. Inputs are uniform in [0, 1]^D. Each number is the median
of --repeats runs after a small warm-up; everything is measured in one run, so compare the
ratios (absolute rates move with the machine's load).

The gather ceiling: one point of the encoding reads L * 2^D table rows (16 * 8 = 128 in 3D,
16 * 16 = 256 in 4D), each F = 2 floats, from a table of L * 2^19 rows. The ceiling is the
rate at which the machine fetches uniformly random rows of F floats from a table of that size
(the best of a compiled OpenMP gather with prefetching, torch.index_select and numpy.take),
in rows per second, divided by L * 2^D to give points per second. The encoding can beat it: it
works one level at a time (a level's 2^19 rows stay within cache and TLB reach), its coarse
levels are small enough to stay in cache, and the hash keeps the two x-neighbours of a cell
close in memory, so not every row it reads is a random miss. A second, tighter line is printed
for reference: the same gather from a table of one level's size (2^19 rows).

The pure-PyTorch reference is timed on --reference-points (default 2^15) points to keep the run
short; its cost per point does not depend on the count (it works in chunks of 2^14 points).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fourdistill.field.hash_grid import (
    HashGridConfig,
    HashGridEncoding,
    KernelBuildError,
    load_cpu_kernel,
    resolve_backend,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def encoding_rates(enc: HashGridEncoding, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(forward points/s, forward+backward points/s) of `enc` on points `x` (N, D)."""
    upstream = torch.randn(x.shape[0], enc.n_output_dims, device=x.device)

    def forward():
        with torch.no_grad():
            enc(x)

    def forward_backward():
        enc.table.grad = None
        enc(x).backward(upstream)

    with torch.no_grad():  # warm-up: allocator, first-call work
        enc(x[:1024])
    n = x.shape[0]
    return n / median_seconds(forward, x.device, repeats), n / median_seconds(forward_backward, x.device, repeats)


def gather_ceiling(rows: int, n_features: int, device: torch.device, repeats: int, n_lookups: int = 1 << 24) -> dict[str, float]:
    """Random rows per second from a (rows, n_features) float32 table, by each available method."""
    g = torch.Generator().manual_seed(0)
    table = torch.rand(rows, n_features, generator=g).to(device)
    index32 = torch.randint(0, rows, (n_lookups,), generator=g, dtype=torch.int32).to(device)
    index64 = index32.long()
    rates = {"torch.index_select": n_lookups / median_seconds(lambda: table.index_select(0, index64), device, repeats)}
    if device.type == "cpu":
        table_np, index_np = table.numpy(), index64.numpy()
        rates["numpy.take"] = n_lookups / median_seconds(lambda: np.take(table_np, index_np, axis=0), device, repeats)
        try:
            kernel = load_cpu_kernel()
            rates["compiled gather"] = n_lookups / median_seconds(lambda: kernel.random_gather(table, index32), device, repeats)
        except KernelBuildError:
            pass
    return rates


def available_backends(device: torch.device) -> list[str]:
    names = ["torch"]
    fast = "cpu" if device.type == "cpu" else "tcnn"
    try:
        resolve_backend(fast, device)
        names.append(fast)
    except (KernelBuildError, RuntimeError, ValueError) as exc:
        print(f"[{device.type}] backend {fast!r} unavailable: {exc}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1 << 18, help="points per call for the fast backends (default 2^18)")
    parser.add_argument("--reference-points", type=int, default=1 << 15, help="points per call for the reference (default 2^15)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per number; the median is shown (default 3)")
    args = parser.parse_args()

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    base = HashGridConfig()
    L, F, T = base.n_levels, base.n_features_per_level, base.table_size
    print(
        f"hash grid at 4D-fy sizes: {L} levels x {F} features, 2^{base.log2_hashmap_size} rows per level "
        f"({L * T * F * 4 / 2**20:.0f} MiB table); {torch.get_num_threads()} CPU threads"
    )
    print(f"points per call: {args.points} (reference: {args.reference_points}); median of {args.repeats}\n")

    for device in devices:
        backends = available_backends(device)
        gather = gather_ceiling(L * T, F, device, args.repeats)
        ceiling = max(gather.values())
        print(f"[{device.type}] random-gather rows/s, whole table ({L * T} rows): " + ", ".join(f"{k} {v:.3g}" for k, v in gather.items()) + f"  -> ceiling {ceiling:.3g}")
        level_gather = gather_ceiling(T, F, device, args.repeats)
        level_ceiling = max(level_gather.values())
        print(f"[{device.type}] random-gather rows/s, one level ({T} rows): " + ", ".join(f"{k} {v:.3g}" for k, v in level_gather.items()) + f"  -> {level_ceiling:.3g}")
        header = (
            f"{'dims':>4} {'backend':>8} {'points':>8} {'fwd pts/s':>11} {'fwd+bwd pts/s':>14} {'ceiling pts/s':>14} "
            f"{'fwd/ceil':>9} {'f+b/ceil':>9} {'fwd/level-gather':>17}"
        )
        print(header)
        rates = {}
        for n_dims in (3, 4):
            config = HashGridConfig(n_input_dims=n_dims)
            ceiling_points = ceiling / (L * 2**n_dims)
            level_points = level_ceiling / (L * 2**n_dims)
            for backend in backends:
                n = args.reference_points if backend == "torch" else args.points
                x = torch.rand(n, n_dims, generator=torch.Generator().manual_seed(n_dims)).to(device)
                enc = HashGridEncoding(config, backend=backend).to(device)
                fwd, fwd_bwd = encoding_rates(enc, x, args.repeats)
                rates[n_dims, backend] = (fwd, fwd_bwd)
                print(
                    f"{n_dims:>3}D {backend:>8} {n:>8} {fwd:>11.3g} {fwd_bwd:>14.3g} {ceiling_points:>14.3g} "
                    f"{fwd / ceiling_points:>9.0%} {fwd_bwd / ceiling_points:>9.0%} {fwd / level_points:>17.0%}"
                )
                del enc
        fast = "cpu" if device.type == "cpu" else "tcnn"
        if fast in backends:
            print(f"\n[{device.type}] {fast} vs the PyTorch reference (goal >= 10x in forward+backward):")
            for n_dims in (3, 4):
                (f_fast, fb_fast), (f_ref, fb_ref) = rates[n_dims, fast], rates[n_dims, "torch"]
                print(f"  {n_dims}D: forward {f_fast / f_ref:.1f}x, forward+backward {fb_fast / fb_ref:.1f}x")
            print(f"[{device.type}] {fast} vs the gather ceiling (goal >= 50%):")
            for n_dims in (3, 4):
                f_fast, fb_fast = rates[n_dims, fast]
                per_point = L * 2**n_dims
                print(
                    f"  {n_dims}D: forward {f_fast * per_point / ceiling:.0%}, forward+backward {fb_fast * per_point / ceiling:.0%} "
                    f"(forward vs the one-level gather {f_fast * per_point / level_ceiling:.0%})"
                )
        print()


if __name__ == "__main__":
    main()
