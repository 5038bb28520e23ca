"""Points per second of the hash-grid encoding, per backend, 3D and 4D, forward and forward+backward,
beside the machine's random-gather ceiling.

Run: python benchmarks/hash_grid.py [--points 262144] [--reference-points 16384] [--rounds 5]

Sizes are 4D-fy's (Bahmani et al. 2024): 16 levels x 2 features, 2^19 rows per level, base
resolution 16, per-level scale 1.447. Inputs are uniform in [0, 1]^D. Every variant (each gather
method, each backend, dimension and direction) runs once per round, in turns, after a warm-up
of each; each ratio is taken within a round and printed as its median and spread over the
rounds (absolute rates move with the machine's load).

The gather ceiling: one point of the encoding reads L * 2^D table rows (16 * 8 = 128 in 3D,
16 * 16 = 256 in 4D), each F = 2 floats, from a table of L * 2^19 rows. The ceiling is the
rate at which the machine fetches uniformly random rows of F floats from a table of that size
(the best of a compiled OpenMP gather with prefetching, torch.index_select and numpy.take),
in rows per second, divided by L * 2^D to give points per second. The encoding can beat it: it
works one level at a time (a level's 2^19 rows stay within cache and TLB reach), its coarse
levels are small enough to stay in cache, and the hash keeps the two x-neighbours of a cell
close in memory, so not every row it reads is a random miss. A second, tighter line is printed
for reference: the same gather from a table of one level's size (2^19 rows).

The pure-PyTorch reference is timed on --reference-points (default 2^14) points to keep the run
short; its cost per point does not depend on the count (it works in chunks of 2^14 points).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import add_rounds_argument, alternate, print_ratio, print_times

from fourdistill.field.hash_grid import (
    HashGridConfig,
    HashGridEncoding,
    KernelBuildError,
    load_cpu_kernel,
    resolve_backend,
)


def encoding_variants(enc: HashGridEncoding, x: torch.Tensor) -> dict:
    """Forward and forward+backward callables of `enc` on points `x` (N, D)."""
    upstream = torch.randn(x.shape[0], enc.n_output_dims, device=x.device)

    def forward():
        with torch.no_grad():
            enc(x)

    def forward_backward():
        enc.table.grad = None
        enc(x).backward(upstream)

    return {"fwd": forward, "f+b": forward_backward}


def gather_variants(rows: int, n_features: int, device: torch.device, n_lookups: int = 1 << 22) -> dict:
    """Callables that fetch `n_lookups` random rows of a (rows, n_features) float32 table, one per
    available method."""
    g = torch.Generator().manual_seed(0)
    table = torch.rand(rows, n_features, generator=g).to(device)
    index32 = torch.randint(0, rows, (n_lookups,), generator=g, dtype=torch.int32).to(device)
    index64 = index32.long()
    out = {"torch.index_select": lambda: table.index_select(0, index64)}
    if device.type == "cpu":
        table_np, index_np = table.numpy(), index64.numpy()
        out["numpy.take"] = lambda: np.take(table_np, index_np, axis=0)
        try:
            kernel = load_cpu_kernel()
            out["compiled gather"] = lambda: kernel.random_gather(table, index32)
        except KernelBuildError:
            pass
    return out


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
    parser.add_argument("--reference-points", type=int, default=1 << 14, help="points per call for the reference (default 2^14)")
    add_rounds_argument(parser, default=5)
    args = parser.parse_args()

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    base = HashGridConfig()
    L, F, T = base.n_levels, base.n_features_per_level, base.table_size
    n_lookups = 1 << 22  # rows fetched per call; the table size, not this count, sets the cache misses
    print(
        f"hash grid at 4D-fy sizes: {L} levels x {F} features, 2^{base.log2_hashmap_size} rows per level "
        f"({L * T * F * 4 / 2**20:.0f} MiB table); {torch.get_num_threads()} CPU threads"
    )
    print(f"points per call: {args.points} (reference: {args.reference_points}); every variant alternated over {args.rounds} rounds after a warm-up\n")

    for device in devices:
        backends = available_backends(device)
        fast = "cpu" if device.type == "cpu" else "tcnn"
        # every variant is timed per table row it reads: a gather per row fetched, an encoding
        # per L * 2^D rows (one point), so a ratio to the gather is the fraction of the ceiling
        variants, units = {}, {}
        for table, rows in (("table", L * T), ("level", T)):
            for method, fn in gather_variants(rows, F, device, n_lookups).items():
                variants[f"gather {table} {method}"] = fn
                units[f"gather {table} {method}"] = n_lookups
        for n_dims in (3, 4):
            config = HashGridConfig(n_input_dims=n_dims)
            for backend in backends:
                n = args.reference_points if backend == "torch" else args.points
                x = torch.rand(n, n_dims, generator=torch.Generator().manual_seed(n_dims)).to(device)
                enc = HashGridEncoding(config, backend=backend).to(device)
                for kind, fn in encoding_variants(enc, x).items():
                    variants[f"{n_dims}D {backend} {kind}"] = fn
                    units[f"{n_dims}D {backend} {kind}"] = n * L * 2**n_dims
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        timings = alternate(variants, rounds=args.rounds, warmup=1, units=units, unit="row", sync=sync)
        for table in ("table", "level"):
            timings.add_best(f"ceiling {table}", [k for k in variants if k.startswith(f"gather {table} ")])

        print(f"[{device.type}] random gather, seconds per row (whole table {L * T} rows; one level {T} rows); the ceiling is the best method per round:")
        print_times(timings, [k for k in timings.seconds if k.startswith(("gather", "ceiling"))])
        print(f"[{device.type}] encoding, seconds per table row read (one point reads L * 2^D = {L * 8} rows in 3D, {L * 16} in 4D):")
        print_times(timings, [k for k in variants if not k.startswith("gather")])
        print(f"{'dims':>4} {'backend':>8} {'fwd pts/s':>11} {'fwd+bwd pts/s':>14} {'ceiling pts/s':>14}  (medians)")
        for n_dims in (3, 4):
            per_point = L * 2**n_dims
            ceiling_points = 1 / (timings.median("ceiling table") * per_point)
            for backend in backends:
                fwd, fb = (1 / (timings.median(f"{n_dims}D {backend} {k}") * per_point) for k in ("fwd", "f+b"))
                print(f"{n_dims:>3}D {backend:>8} {fwd:>11.3g} {fb:>14.3g} {ceiling_points:>14.3g}")
        if fast in backends:
            print(f"\n[{device.type}] {fast} vs the PyTorch reference (goal >= 10x in forward+backward):")
            for n_dims in (3, 4):
                print_ratio(timings, f"{n_dims}D torch fwd", f"{n_dims}D {fast} fwd", f"{n_dims}D forward speed-up")
                print_ratio(timings, f"{n_dims}D torch f+b", f"{n_dims}D {fast} f+b", f"{n_dims}D forward+backward speed-up", at_least=10.0)
            print(f"[{device.type}] {fast} vs the gather ceiling (goal >= 50%):")
            for n_dims in (3, 4):
                print_ratio(timings, "ceiling table", f"{n_dims}D {fast} fwd", f"{n_dims}D forward / ceiling", at_least=0.5, percent=True)
                print_ratio(timings, "ceiling table", f"{n_dims}D {fast} f+b", f"{n_dims}D forward+backward / ceiling", at_least=0.5, percent=True)
                print_ratio(timings, "ceiling level", f"{n_dims}D {fast} fwd", f"{n_dims}D forward / one-level gather", percent=True)
        print()


if __name__ == "__main__":
    main()
