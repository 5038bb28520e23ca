import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from fourdistill.field import HashGridConfig, HashGridEncoding
from fourdistill.field.hash_grid import (
    HASH_PRIMES,
    KernelBuildError,
    grid_levels,
    hash_grid_reference,
    load_cpu_kernel,
    resolve_backend,
)

# Small grids that still have dense and hashed levels, odd feature counts and tiny tables.
SMALL_CONFIGS = [
    HashGridConfig(n_input_dims=3, n_levels=4, n_features_per_level=4, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0),
    HashGridConfig(n_input_dims=4, n_levels=3, n_features_per_level=1, log2_hashmap_size=8, base_resolution=3, per_level_scale=1.7),
    HashGridConfig(n_input_dims=3, n_levels=2, n_features_per_level=8, log2_hashmap_size=6, base_resolution=5, per_level_scale=1.5),
]


@pytest.fixture(scope="module")
def kernel():
    """The compiled CPU kernel, built once for the whole module (about a minute the first time)."""
    return load_cpu_kernel()


def _pair(config: HashGridConfig, seed: int = 0):
    """A compiled and a reference encoding sharing one table of unit-scale values."""
    fast = HashGridEncoding(config, backend="cpu", seed=seed)
    ref = HashGridEncoding(config, backend="torch", seed=seed)
    with torch.no_grad():
        fast.table.copy_(torch.randn(fast.table.shape, generator=torch.Generator().manual_seed(seed)))
        ref.table.copy_(fast.table)
    return fast, ref


def _edge_points(n_dims: int) -> torch.Tensor:
    """Box corners, points on every face (0 and 1 in one coordinate), and points just inside."""
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_dims)))
    rng = torch.Generator().manual_seed(1)
    faces = []
    for d in range(n_dims):
        for v in (0.0, 1.0, 1.0 - 1e-7, 1e-7):
            p = torch.rand(16, n_dims, generator=rng)
            p[:, d] = v
            faces.append(p)
    return torch.cat([corners, *faces])


def _encode_scalar(x: np.ndarray, table: np.ndarray, config: HashGridConfig) -> np.ndarray:
    """The documented conventions written out point by point, corner by corner (independent of
    the vectorised reference)."""
    D, F, T = config.n_input_dims, config.n_features_per_level, config.table_size
    out = np.zeros((x.shape[0], config.n_levels * F), dtype=np.float64)
    log2_scale = np.float32(math.log2(np.float32(config.per_level_scale)))
    for level in range(config.n_levels):
        s = np.float32(np.exp2(np.float32(level) * log2_scale)) * np.float32(config.base_resolution) - np.float32(1)
        R = int(math.ceil(s)) + 1
        size = min(((R**D + 7) // 8) * 8, T)
        for i, point in enumerate(np.clip(x, 0, 1).astype(np.float32)):
            p = point * s + np.float32(0.5)
            cell = np.floor(p)
            frac = p - cell
            for corner in itertools.product([0, 1], repeat=D):
                v = [int(cell[d]) + corner[d] for d in range(D)]
                if R**D <= T:
                    index = sum(v[d] * R**d for d in range(D)) % size
                else:
                    h = 0
                    for d in range(D):
                        h ^= (v[d] * HASH_PRIMES[d]) % 2**32
                    index = h % T
                w = np.prod([frac[d] if corner[d] else 1 - frac[d] for d in range(D)])
                out[i, level * F : (level + 1) * F] += w * table[level * T + index]
    return out


def test_defaults_are_4dfy_sizes():
    config = HashGridConfig()
    enc = HashGridEncoding(config, backend="torch")
    assert enc.table.shape == (16 * 2**19, 2) and enc.table.dtype == torch.float32
    assert enc.n_output_dims == 32
    levels = grid_levels(config)
    assert levels.resolutions[0] == 16 and not levels.hashed[0]
    assert 4000 <= levels.resolutions[-1] <= 4100 and levels.hashed[-1]  # "finest ~4096"
    # dense exactly while R^D fits in the table
    assert all(h == (r**3 > 2**19) for r, h in zip(levels.resolutions, levels.hashed))
    assert sum(not h for h in grid_levels(HashGridConfig(n_input_dims=4)).hashed) == 2


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ValueError, match="n_input_dims"):
        HashGridConfig(n_input_dims=2)
    with pytest.raises(ValueError, match="n_features_per_level"):
        HashGridConfig(n_features_per_level=3)
    with pytest.raises(ValueError, match="backend"):
        HashGridEncoding(HashGridConfig(), backend="cuda")
    enc = HashGridEncoding(SMALL_CONFIGS[0], backend="torch")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        enc(torch.rand(5, 4))
    with pytest.raises(ValueError, match="positions"):
        enc(torch.rand(5, 3, requires_grad=True))


def test_init_is_seeded_and_small():
    config = SMALL_CONFIGS[0]
    a, b, c = (HashGridEncoding(config, backend="torch", seed=s) for s in (3, 3, 4))
    assert torch.equal(a.table, b.table)
    assert not torch.equal(a.table, c.table)
    assert a.table.abs().max() <= 1e-4 and a.table.std() > 3e-5


def test_shapes_follow_leading_dims():
    enc = HashGridEncoding(SMALL_CONFIGS[1], backend="torch")
    assert enc(torch.rand(2, 7, 4)).shape == (2, 7, 3)
    assert enc(torch.rand(0, 4)).shape == (0, 3)


@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=["3d-f4", "4d-f1", "3d-f8"])
def test_reference_follows_the_documented_conventions(config):
    enc = HashGridEncoding(config, backend="torch", seed=2)
    with torch.no_grad():
        enc.table.normal_(generator=torch.Generator().manual_seed(2))
    x = torch.cat([torch.rand(24, config.n_input_dims, generator=torch.Generator().manual_seed(5)), _edge_points(config.n_input_dims)[::7]])
    expected = _encode_scalar(x.numpy(), enc.table.detach().numpy().astype(np.float64), config)
    with torch.no_grad():
        got = enc(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_dims", [3, 4])
def test_compiled_matches_reference_at_4dfy_sizes(kernel, n_dims):
    fast, ref = _pair(HashGridConfig(n_input_dims=n_dims), seed=n_dims)
    x = torch.cat([torch.rand(3000, n_dims, generator=torch.Generator().manual_seed(0)), _edge_points(n_dims)])
    a, b = fast(x), ref(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(a.shape, generator=torch.Generator().manual_seed(9))
    a.backward(upstream)
    b.backward(upstream)
    assert fast.table.grad.abs().sum() > 0
    torch.testing.assert_close(fast.table.grad, ref.table.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=["3d-f4", "4d-f1", "3d-f8"])
def test_compiled_matches_reference_on_small_grids(kernel, config):
    fast, ref = _pair(config, seed=7)
    D = config.n_input_dims
    x = torch.cat([torch.rand(500, D, generator=torch.Generator().manual_seed(3)), _edge_points(D)])
    a, b = fast(x), ref(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(a.shape, generator=torch.Generator().manual_seed(4))
    a.backward(upstream)
    b.backward(upstream)
    torch.testing.assert_close(fast.table.grad, ref.table.grad, rtol=1e-5, atol=1e-5)


def test_points_outside_the_box_are_clamped(kernel):
    fast, ref = _pair(SMALL_CONFIGS[0])
    x = torch.tensor([[-0.5, 0.3, 1.7], [2.0, -3.0, 0.5], [1.0 + 1e-6, 0.0, -1e-6]])
    for enc in (fast, ref):
        with torch.no_grad():
            torch.testing.assert_close(enc(x), enc(x.clamp(0, 1)), rtol=0, atol=0)


def test_compiled_backward_is_deterministic_across_thread_counts(kernel):
    config = HashGridConfig(n_input_dims=4, n_levels=6, log2_hashmap_size=14)
    enc = HashGridEncoding(config, backend="cpu")
    x = torch.rand(20000, 4, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(20000, enc.n_output_dims, generator=torch.Generator().manual_seed(1))
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            enc.table.grad = None
            enc(x).backward(upstream)
            grads.append(enc.table.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


def test_auto_picks_the_compiled_kernel_when_it_builds(kernel):
    assert resolve_backend("auto", "cpu") == "cpu"
    enc = HashGridEncoding(HashGridConfig(), backend="auto")
    assert enc.backend_for(torch.device("cpu")) == "cpu"


def test_failed_build_falls_back_to_the_reference_with_one_warning(tmp_path):
    bad = tmp_path / "broken_hash_grid.cpp"
    bad.write_text("this is not C++ {\n")
    with pytest.warns(RuntimeWarning, match="broken_hash_grid.cpp.*pure-PyTorch reference"):
        assert resolve_backend("auto", "cpu", kernel_source=bad, build_root=tmp_path / "build") == "torch"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto", "cpu", kernel_source=bad, build_root=tmp_path / "build") == "torch"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    with pytest.raises(KernelBuildError, match="broken_hash_grid.cpp"):
        resolve_backend("cpu", "cpu", kernel_source=bad, build_root=tmp_path / "build")


def test_missing_compiler_falls_back_to_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="pure-PyTorch reference"):
        assert resolve_backend("auto", "cpu", build_root=tmp_path / "build") == "torch"


def test_backends_refuse_the_wrong_device():
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("tcnn", "cpu")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("fast", "cpu")
    assert resolve_backend("torch", "cpu") == "torch"


def test_reference_chunks_agree_with_one_pass():
    config = SMALL_CONFIGS[0]
    enc = HashGridEncoding(config, backend="torch")
    x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            hash_grid_reference(x, enc.table, enc.levels, chunk=37), hash_grid_reference(x, enc.table, enc.levels, chunk=4096), rtol=0, atol=0
        )
