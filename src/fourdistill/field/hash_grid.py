"""Multi-resolution hash encoding (Instant-NGP) of (x, y, z) or (x, y, z, t), three backends.

4D-fy's field (Bahmani et al. 2024) sums a static 3D hash grid and a dynamic 4D hash grid, each
with 16 levels, 2 features per level, 2^19 rows per level, base resolution 16 and per-level
scale 1.447; those are the defaults of `HashGridConfig`.

Backends, one set of conventions:
- "torch": the pure-PyTorch reference, vectorised over levels and corners; the others are
  tested against it.
- "cpu": a C++/OpenMP kernel (csrc/hash_grid.cpp), forward and backward, built with torch's
  extension builder on first use and cached (torch's extension folder, or the folder named by
  the FOURDISTILL_EXT_DIR environment variable).
- "tcnn": tiny-cuda-nn's grid encoding on CUDA tensors, run on this module's table.
- "auto": tcnn for CUDA inputs when tiny-cuda-nn imports, the compiled kernel for CPU inputs
  when it builds, otherwise the reference with one warning that says why.

Conventions (tiny-cuda-nn's, so that its kernel reads the same table; D input dims, T = 2^log2_hashmap_size):
- inputs are clamped to [0, 1], so points on the box faces (exactly 0 or 1) are valid;
- level l has scale s_l = base_resolution * 2^(l * log2(per_level_scale)) - 1 and
  R_l = ceil(s_l) + 1 vertices per axis, computed in float32 (level 0 of the defaults:
  s = 15, R = 16; level 15: s ~ 4085, R = 4087, the "finest ~4096");
- a point maps to p = x * s_l + 0.5 in grid units (the 0.5 staggers the levels, Instant-NGP
  appendix A); its cell is floor(p), its multilinear weights come from p - floor(p);
- a vertex v (D non-negative integers) of level l is row l * T + index, where
  - dense levels (R_l^D <= T): index = (sum_d v_d * R_l^d) mod S_l with
    S_l = R_l^D rounded up to a multiple of 8 (the upper vertex of the last cell wraps around,
    as in tiny-cuda-nn; the rows from S_l to T of a dense level are never read);
  - hashed levels: index = (XOR_d v_d * pi_d mod 2^32) mod T with
    pi = (1, 2654435761, 805459861, 3674653429) (Instant-NGP's primes);
- the output of level l is sum over the 2^D corners of weight * row, features of level l at
  columns [l * F, (l + 1) * F).

The encoding is differentiable with respect to the table only; positions are treated as
data (asking for their gradient is an error rather than a silent zero).

Differences with tiny-cuda-nn that cannot be removed: it computes s_l with its own exp2f and
p with a fused multiply-add, so p can differ in the last bit; its backward sums with atomics
(summation order varies). Values agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cpu", "tcnn")
# Instant-NGP (Mueller et al. 2022, eq. 4): pi_1 = 1, pi_2 = 2654435761, pi_3 = 805459861; the
# fourth is tiny-cuda-nn's next prime, used for t.
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)
KERNEL_SOURCE = Path(__file__).resolve().parent / "csrc" / "hash_grid.cpp"
# -ffp-contract=off keeps x * s + 0.5 as two roundings, as in the reference. -march=native gave
# ~1.3x in 4D on the development machine; since it ties the build to the CPU, the CPU's
# identity is part of the build name (kernel_build_name), so a shared cache never hands a build
# to a CPU it was not made for.
KERNEL_CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-march=native")
KERNEL_LDFLAGS = ("-fopenmp",)


@dataclass
class HashGridConfig:
    """Sizes of one multi-resolution hash grid; defaults are 4D-fy's (Bahmani et al. 2024)."""

    n_input_dims: int = 3  # 3 (x, y, z) or 4 (x, y, z, t)
    n_levels: int = 16  # 4D-fy
    n_features_per_level: int = 2  # 4D-fy
    log2_hashmap_size: int = 19  # 4D-fy
    base_resolution: int = 16  # 4D-fy
    per_level_scale: float = 1.447  # 4D-fy: finest ~4096

    def __post_init__(self):
        if self.n_input_dims not in (3, 4):
            raise ValueError(f"HashGridConfig.n_input_dims must be 3 or 4, got {self.n_input_dims}")
        if not 1 <= self.n_levels <= 32:
            raise ValueError(f"HashGridConfig.n_levels must be in 1..32, got {self.n_levels}")
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ValueError(f"HashGridConfig.n_features_per_level must be 1, 2, 4 or 8, got {self.n_features_per_level}")
        if not 3 <= self.log2_hashmap_size <= 28:
            raise ValueError(f"HashGridConfig.log2_hashmap_size must be in 3..28, got {self.log2_hashmap_size}")
        if self.base_resolution < 2:
            raise ValueError(f"HashGridConfig.base_resolution must be >= 2, got {self.base_resolution}")
        if not (math.isfinite(self.per_level_scale) and self.per_level_scale >= 1.0):
            raise ValueError(f"HashGridConfig.per_level_scale must be >= 1, got {self.per_level_scale}")

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    @property
    def table_size(self) -> int:
        """T, the rows reserved for each level."""
        return 1 << self.log2_hashmap_size


@dataclass(frozen=True)
class GridLevels:
    """The per-level constants every backend uses (see the module docstring).

    scales: s_l (float32 values); resolutions: R_l; sizes: S_l, the rows level l reads;
    hashed: whether level l is hashed (R_l^D > T).
    """

    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    sizes: tuple[int, ...]
    hashed: tuple[bool, ...]
    table_size: int
    n_input_dims: int

    def tensors(self) -> dict[str, torch.Tensor]:
        """The constants as CPU tensors: scales (L,) float32, the rest (L,) int64."""
        return {
            "scales": torch.tensor(self.scales, dtype=torch.float32),
            "resolutions": torch.tensor(self.resolutions, dtype=torch.int64),
            "sizes": torch.tensor(self.sizes, dtype=torch.int64),
            "hashed": torch.tensor(self.hashed, dtype=torch.int64),
        }


def grid_levels(config: HashGridConfig) -> GridLevels:
    """Scales, resolutions, row counts and dense/hashed flags of every level, in float32 as
    tiny-cuda-nn computes them."""
    log2_scale = np.float32(np.log2(np.float32(config.per_level_scale)))
    scales, resolutions, sizes, hashed = [], [], [], []
    T, D = config.table_size, config.n_input_dims
    for level in range(config.n_levels):
        s = np.float32(np.exp2(np.float32(level) * log2_scale)) * np.float32(config.base_resolution) - np.float32(1.0)
        r = int(np.ceil(s)) + 1
        dense_rows = r**D
        scales.append(float(s))
        resolutions.append(r)
        sizes.append(min(-(-dense_rows // 8) * 8, T))
        hashed.append(dense_rows > T)
    return GridLevels(tuple(scales), tuple(resolutions), tuple(sizes), tuple(hashed), T, D)


# ----------------------------------------------------------------------------- the reference


def _corner_bits(n_dims: int, device) -> torch.Tensor:
    """(2^D, D) int64: bit d of corner c, the order every backend uses."""
    c = torch.arange(1 << n_dims, device=device)
    return (c[:, None] >> torch.arange(n_dims, device=device)) & 1


def reference_corners(x: torch.Tensor, levels: GridLevels) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and multilinear weights of the cell corners around each point.

    x: (N, D) float32, already in [0, 1]. Returns rows (N, L, 2^D) int64 (row l * T + index)
    and weights (N, L, 2^D) float32.
    """
    D, T, device = levels.n_input_dims, levels.table_size, x.device
    consts = {k: v.to(device) for k, v in levels.tensors().items()}
    bits = _corner_bits(D, device)  # (C, D)
    pos = x[:, None, :] * consts["scales"][None, :, None]  # (N, L, D)
    pos = pos + 0.5
    cell = torch.floor(pos)
    frac = pos - cell
    cell = cell.long()
    n_levels = len(levels.scales)
    weights = torch.ones(x.shape[0], n_levels, bits.shape[0], dtype=x.dtype, device=device)
    key_hashed = torch.zeros(x.shape[0], n_levels, bits.shape[0], dtype=torch.int64, device=device)
    key_dense = torch.zeros_like(key_hashed)
    stride = torch.ones(n_levels, dtype=torch.int64, device=device)  # R_l^d
    for d in range(D):
        up = bits[:, d]  # (C,)
        vertex = cell[:, :, d : d + 1] + up  # (N, L, C)
        f = frac[:, :, d : d + 1]
        weights = weights * torch.where(up.bool(), f, 1.0 - f)
        key_hashed ^= vertex * HASH_PRIMES[d]
        key_dense += vertex * stride[None, :, None]
        stride = stride * consts["resolutions"]
    index = torch.where(
        consts["hashed"].bool()[None, :, None],
        key_hashed & (T - 1),
        key_dense % consts["sizes"][None, :, None],
    )
    rows = index + torch.arange(n_levels, device=device)[None, :, None] * T
    return rows, weights


def hash_grid_reference(x: torch.Tensor, table: torch.Tensor, levels: GridLevels, chunk: int = 1 << 14) -> torch.Tensor:
    """The encoding in plain PyTorch; autograd gives the gradient of the table.

    x: (N, D) float32 in [0, 1]; table: (L * T, F). Returns (N, L * F). Points are processed in
    chunks of `chunk` to bound the (chunk, L, 2^D) index tensors.
    """
    n_levels, F = len(levels.scales), table.shape[1]
    outs = []
    for xc in x.split(chunk):
        rows, weights = reference_corners(xc, levels)
        values = table.index_select(0, rows.reshape(-1)).view(*rows.shape, F)  # (n, L, C, F)
        outs.append((values * weights[..., None]).sum(dim=2).reshape(xc.shape[0], n_levels * F))
    if not outs:
        return table.new_zeros(0, n_levels * F)
    return torch.cat(outs)


# ----------------------------------------------------------------------- the compiled kernel


class KernelBuildError(RuntimeError):
    """The compiled CPU kernel could not be built or loaded."""


_kernels: dict[tuple[str, str], object] = {}  # (source, build root) -> module or KernelBuildError
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def cpu_signature() -> str:
    """The CPU model and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = ("model name", "flags", "features", "cpu part", "cpu implementer")
    seen = {}
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in keep and key not in seen:
            seen[key] = value.strip()
    return f"{platform.machine()} {platform.processor()} " + " | ".join(f"{k}={v}" for k, v in sorted(seen.items()))


def kernel_build_name(source: Path) -> str:
    """Extension name: changes with the source, the flags, the torch version and the CPU, so a
    cached build is reused only when all four match."""
    digest = hashlib.sha256()
    digest.update(Path(source).read_bytes())
    digest.update(" ".join(KERNEL_CFLAGS + KERNEL_LDFLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(cpu_signature().encode())
    return f"fourdistill_hash_grid_{digest.hexdigest()[:12]}"


def load_cpu_kernel(source: Path | str = KERNEL_SOURCE, build_root: Path | str | None = None):
    """The compiled CPU kernel, built on first use (about a minute) and cached on disk.

    build_root: folder for the build; default FOURDISTILL_EXT_DIR when set, else torch's
    extension folder (TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions). Raises
    KernelBuildError (remembered: a failed build is not retried in the same process).
    """
    source = Path(source).resolve()
    if build_root is None:
        build_root = os.environ.get("FOURDISTILL_EXT_DIR") or None
    key = (str(source), str(build_root))
    if key not in _kernels:
        _kernels[key] = _build_kernel(source, build_root)
    kernel = _kernels[key]
    if isinstance(kernel, KernelBuildError):
        raise kernel
    return kernel


def _build_kernel(source: Path, build_root):
    try:
        from torch.utils import cpp_extension

        name = kernel_build_name(source)
        build_dir = None
        if build_root is not None:
            build_dir = Path(build_root) / name
            build_dir.mkdir(parents=True, exist_ok=True)
        log.info("loading the hash-grid CPU kernel %s (the first build takes about a minute)", name)
        return cpp_extension.load(
            name=name,
            sources=[str(source)],
            extra_cflags=list(KERNEL_CFLAGS),
            extra_ldflags=list(KERNEL_LDFLAGS),
            build_directory=None if build_dir is None else str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # any failure to compile or load means: no compiled kernel
        return KernelBuildError(f"building the hash-grid CPU kernel from {source} failed: {_build_failure_reason(exc)}")


def _build_failure_reason(exc: Exception) -> str:
    """The line of a build log that says what went wrong (a compiler error, a missing program)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        low = line.lower()
        if ("error" in low and not low.startswith("error building extension")) or "not found" in low or "no such file" in low:
            return line
    return lines[-1] if lines else type(exc).__name__


class _CompiledHashGrid(torch.autograd.Function):
    """The compiled CPU kernel as an autograd function; the gradient goes to the table only."""

    @staticmethod
    def forward(ctx, x, table, kernel, consts, table_size):
        ctx.save_for_backward(x)
        ctx.kernel, ctx.consts, ctx.table_size, ctx.n_features = kernel, consts, table_size, table.shape[1]
        return kernel.forward(x, table, consts["scales"], consts["resolutions"], consts["sizes"], consts["hashed"], table_size)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        c = ctx.consts
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = ctx.kernel.backward(
                x, grad_out.contiguous().float(), ctx.n_features, c["scales"], c["resolutions"], c["sizes"], c["hashed"], ctx.table_size
            )
        return None, grad_table, None, None, None


# ------------------------------------------------------------------------------ tiny-cuda-nn


def tcnn_encoding_config(config: HashGridConfig) -> dict:
    """tiny-cuda-nn's description of the same grid."""
    return {
        "otype": "Grid",
        "type": "Hash",
        "hash": "CoherentPrime",
        "interpolation": "Linear",
        "n_levels": config.n_levels,
        "n_features_per_level": config.n_features_per_level,
        "log2_hashmap_size": config.log2_hashmap_size,
        "base_resolution": config.base_resolution,
        "per_level_scale": config.per_level_scale,
    }


class _TcnnGrid:
    """tiny-cuda-nn's grid kernel run on a table in this module's layout.

    tiny-cuda-nn packs level l's S_l rows one after another; the table is repacked (a copy on
    the GPU, differentiable) before each call. The packed size is checked against the one
    tiny-cuda-nn reports, so a version with another layout fails loudly instead of reading the
    wrong rows. The call goes through tiny-cuda-nn's autograd bridge
    (tinycudann.modules._module_function), which takes the parameters as an argument.
    """

    def __init__(self, config: HashGridConfig, levels: GridLevels, seed: int):
        import tinycudann  # imported here: it needs CUDA
        from tinycudann import modules as tcnn_modules

        self._apply = tcnn_modules._module_function.apply
        self._granularity = int(tcnn_modules._C.batch_size_granularity())
        encoding = tinycudann.Encoding(config.n_input_dims, tcnn_encoding_config(config), seed=seed, dtype=torch.float32)
        self._native = encoding.native_tcnn_module
        expected = sum(levels.sizes) * config.n_features_per_level
        if encoding.params.numel() != expected:
            raise RuntimeError(
                f"tiny-cuda-nn's grid has {encoding.params.numel()} parameters where this layout expects {expected}; "
                "its level layout differs from the one fourdistill assumes (use backend='torch')"
            )
        self._levels = levels
        self._n_output_dims = config.n_output_dims

    def __call__(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        T = self._levels.table_size
        packed = torch.cat([table[l * T : l * T + size] for l, size in enumerate(self._levels.sizes)]).reshape(-1)
        n = x.shape[0]
        padded = -(-n // self._granularity) * self._granularity
        if padded != n:
            x = torch.nn.functional.pad(x, (0, 0, 0, padded - n))
        out = self._apply(self._native, x.contiguous(), packed.contiguous(), 1.0)
        return out[:n, : self._n_output_dims].float()


def _tcnn_missing_reason() -> str | None:
    try:
        import tinycudann  # noqa: F401
    except Exception as exc:  # ImportError, or its EnvironmentError without a usable GPU
        return f"tiny-cuda-nn is not usable ({type(exc).__name__}: {exc})"
    return None


# ------------------------------------------------------------------------------ the module


def resolve_backend(
    requested: str,
    device: torch.device | str,
    kernel_source: Path | str = KERNEL_SOURCE,
    build_root: Path | str | None = None,
) -> str:
    """The backend that runs inputs on `device`: "torch", "cpu" or "tcnn".

    "auto" never fails: when the fast backend for the device is unavailable it returns
    "torch" and warns once, naming why. An explicit "cpu" or "tcnn" that cannot run raises.
    kernel_source / build_root choose the C++ source and build folder of the CPU kernel.
    """
    device = torch.device(device)
    if requested not in BACKENDS:
        raise ValueError(f"hash grid backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "torch":
        return "torch"
    if requested == "cpu":
        if device.type != "cpu":
            raise ValueError(f"hash grid backend 'cpu' needs CPU tensors, got {device}")
        load_cpu_kernel(kernel_source, build_root)
        return "cpu"
    if requested == "tcnn":
        if device.type != "cuda":
            raise ValueError(f"hash grid backend 'tcnn' needs CUDA tensors, got {device}")
        reason = _tcnn_missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        return "tcnn"
    # auto
    if device.type == "cuda":
        reason = _tcnn_missing_reason()
        if reason is None:
            return "tcnn"
        _warn_once(f"hash grid: {reason}; using the pure-PyTorch reference on {device.type} (slower)")
        return "torch"
    if device.type == "cpu":
        try:
            load_cpu_kernel(kernel_source, build_root)
            return "cpu"
        except KernelBuildError as exc:
            _warn_once(f"hash grid: {exc}; using the pure-PyTorch reference (20x slower or more)")
            return "torch"
    return "torch"


class HashGridEncoding(torch.nn.Module):
    """Multi-resolution hash encoding of points in [0, 1]^D (conventions in the module docstring).

    table: (n_levels * 2^log2_hashmap_size, n_features_per_level) float32 parameter,
    initialised U(-1e-4, 1e-4) from `seed` (Instant-NGP's initialisation).
    forward: x (..., D) -> (..., n_levels * n_features_per_level) float32.
    """

    def __init__(self, config: HashGridConfig, backend: str = "auto", seed: int = 0):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"hash grid backend must be one of {BACKENDS}, got {backend!r}")
        self.config = config
        self.backend = backend
        self.seed = seed
        self.levels = grid_levels(config)
        self.n_input_dims = config.n_input_dims
        self.n_output_dims = config.n_output_dims
        generator = torch.Generator().manual_seed(seed)
        rows = config.n_levels * config.table_size
        init = torch.rand(rows, config.n_features_per_level, generator=generator) * 2e-4 - 1e-4  # Instant-NGP: U(-1e-4, 1e-4)
        self.table = torch.nn.Parameter(init)
        self._consts = self.levels.tensors()
        self._resolved: dict[str, str] = {}
        self._tcnn: _TcnnGrid | None = None

    def backend_for(self, device: torch.device | str) -> str:
        """The backend this module uses for inputs on `device` (resolved once per device type)."""
        device = torch.device(device)
        if device.type not in self._resolved:
            backend = resolve_backend(self.backend, device)
            if backend == "tcnn" and self._tcnn is None:
                try:
                    self._tcnn = _TcnnGrid(self.config, self.levels, self.seed)
                except Exception as exc:  # e.g. a tiny-cuda-nn build without 4D grids
                    if self.backend != "auto":
                        raise
                    _warn_once(f"hash grid: tiny-cuda-nn cannot run this grid ({exc}); using the pure-PyTorch reference")
                    backend = "torch"
            self._resolved[device.type] = backend
        return self._resolved[device.type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_input_dims:
            raise ValueError(f"hash grid expects points of shape (..., {self.n_input_dims}), got {tuple(x.shape)}")
        if x.requires_grad and torch.is_grad_enabled():
            raise ValueError("hash grid: gradients with respect to positions are not computed; pass x.detach()")
        if x.device != self.table.device:
            raise ValueError(f"hash grid: points are on {x.device} but the table is on {self.table.device}")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.n_input_dims).float().clamp(0.0, 1.0).contiguous()
        backend = self.backend_for(x.device)
        if backend == "cpu":
            kernel = load_cpu_kernel()
            out = _CompiledHashGrid.apply(x, self.table.contiguous(), kernel, self._consts, self.config.table_size)
        elif backend == "tcnn":
            out = self._tcnn(x, self.table)
        else:
            out = hash_grid_reference(x, self.table, self.levels)
        return out.reshape(*lead, self.n_output_dims)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"n_input_dims={c.n_input_dims}, n_levels={c.n_levels}, n_features_per_level={c.n_features_per_level}, "
            f"log2_hashmap_size={c.log2_hashmap_size}, base_resolution={c.base_resolution}, "
            f"per_level_scale={c.per_level_scale}, backend={self.backend!r}"
        )
