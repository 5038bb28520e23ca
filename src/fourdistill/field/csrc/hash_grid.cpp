// Multi-resolution hash encoding on the CPU: forward and backward for 3D and 4D inputs.
//
// The conventions (resolution schedule, +0.5 offset, dense/hashed indexing, table layout) are
// the ones written down in fourdistill/field/hash_grid.py; the pure-PyTorch reference there is
// what this kernel is tested against. Everything is float32; indices are uint32 arithmetic
// with wrap-around, as in the Instant-NGP hash.
//
// Parallel layout (OpenMP, torch's thread count), chosen by measurement on a 2-core machine with
// 2^18 points at 4D-fy's sizes (benchmarks/hash_grid.py measures the result):
// - forward: tasks of (level, block of points); these were 1.4-2.6x faster than point-major
//   blocks that walk every level (a level's rows stay within cache and TLB reach).
// - backward: one task per level. Levels own disjoint rows of the table, so the scatter-add
//   needs no atomics; a point-parallel scatter with atomic float adds was ~3x slower.
// - both split the work of a few dozen points into "compute and prefetch the corner rows" and
//   "use them": the forward got 1.5-3x faster than computing and reading corner by corner, the
//   backward ~1.3x in 4D and no slower in 3D.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Instant-NGP's spatial hash primes (the first is 1 so that neighbours along x stay close in
// memory); one per input dimension.
constexpr uint32_t kPrimes[4] = {1u, 2654435761u, 805459861u, 3674653429u};

struct Level {
  float scale;          // positions map to x * scale + 0.5 in grid units
  uint32_t resolution;  // vertices per axis (dense stride)
  uint32_t size;        // table rows this level uses
  uint32_t hashed;      // 1: XOR-prime hash, 0: dense index
};

std::vector<Level> read_levels(const torch::Tensor& scales, const torch::Tensor& resolutions,
                               const torch::Tensor& sizes, const torch::Tensor& hashed) {
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == torch::kFloat32, "scales must be a 1-D float32 tensor");
  const int64_t n_levels = scales.size(0);
  TORCH_CHECK(resolutions.numel() == n_levels && sizes.numel() == n_levels && hashed.numel() == n_levels,
              "scales, resolutions, sizes and hashed must have one entry per level");
  auto s = scales.contiguous();
  auto r = resolutions.to(torch::kInt64).contiguous();
  auto z = sizes.to(torch::kInt64).contiguous();
  auto h = hashed.to(torch::kInt64).contiguous();
  std::vector<Level> levels(n_levels);
  for (int64_t l = 0; l < n_levels; ++l) {
    levels[l] = Level{s.data_ptr<float>()[l], (uint32_t)r.data_ptr<int64_t>()[l],
                      (uint32_t)z.data_ptr<int64_t>()[l], (uint32_t)(h.data_ptr<int64_t>()[l] != 0)};
  }
  return levels;
}

// The 2^D corners of the cell that holds point `x` at one level: row indices within the level
// and multilinear weights. Corner c takes the upper vertex along dimension d when bit d of c is
// set. Weights multiply in dimension order, as the reference does.
template <int D, bool HASHED>
inline void cell_corners(const float* x, const Level& level, uint32_t hash_mask, uint32_t* index, float* weight) {
  constexpr int C = 1 << D;
  float frac[D];
  uint32_t lower[D], upper[D];  // each dimension's term for the lower / upper vertex
  uint32_t stride = 1;
  for (int d = 0; d < D; ++d) {
    float p = x[d] * level.scale;
    p = p + 0.5f;
    const float cell = std::floor(p);
    frac[d] = p - cell;
    const uint32_t g = (uint32_t)(int32_t)cell;
    if (HASHED) {
      lower[d] = g * kPrimes[d];
      upper[d] = (g + 1u) * kPrimes[d];
    } else {
      lower[d] = g * stride;
      upper[d] = (g + 1u) * stride;
      stride *= level.resolution;
    }
  }
  for (int c = 0; c < C; ++c) {
    uint32_t key = 0;
    float w = 1.0f;
    for (int d = 0; d < D; ++d) {
      const bool up = (c >> d) & 1;
      if (HASHED) {
        key ^= up ? upper[d] : lower[d];
      } else {
        key += up ? upper[d] : lower[d];
      }
      w *= up ? frac[d] : 1.0f - frac[d];
    }
    index[c] = HASHED ? (key & hash_mask) : (key % level.size);
    weight[c] = w;
  }
}

// Points are handled in stages of kStage: first every corner row of the stage is computed and
// prefetched, then the rows are read (forward) or accumulated into (backward). Splitting the
// address computation from the memory accesses keeps many cache misses in flight.
constexpr int64_t kStage = 32;
// Points per forward task; a task is one level of one block, so both threads work on the same
// level's rows at the same time and share them in cache.
constexpr int64_t kForwardBlock = 8192;

template <int D, int F, bool HASHED>
void encode_level(const float* x, int64_t i0, int64_t i1, const Level& level, uint32_t hash_mask,
                  const float* table_level, float* out, int64_t out_stride) {
  constexpr int C = 1 << D;
  uint32_t index[kStage][C];
  float weight[kStage][C];
  for (int64_t s0 = i0; s0 < i1; s0 += kStage) {
    const int64_t n = std::min(kStage, i1 - s0);
    for (int64_t k = 0; k < n; ++k) {
      cell_corners<D, HASHED>(x + (s0 + k) * D, level, hash_mask, index[k], weight[k]);
      for (int c = 0; c < C; ++c) __builtin_prefetch(table_level + (int64_t)index[k][c] * F, 0, 3);
    }
    for (int64_t k = 0; k < n; ++k) {
      float acc[F];
      for (int f = 0; f < F; ++f) acc[f] = 0.0f;
      for (int c = 0; c < C; ++c) {
        const float* row = table_level + (int64_t)index[k][c] * F;
        for (int f = 0; f < F; ++f) acc[f] += weight[k][c] * row[f];
      }
      float* o = out + (s0 + k) * out_stride;
      for (int f = 0; f < F; ++f) o[f] = acc[f];
    }
  }
}

template <int D, int F, bool HASHED>
void scatter_level(const float* x, const float* grad_out, int64_t n_points, const Level& level, uint32_t hash_mask,
                   float* grad_level, int64_t grad_stride) {
  constexpr int C = 1 << D;
  uint32_t index[kStage][C];
  float weight[kStage][C];
  for (int64_t s0 = 0; s0 < n_points; s0 += kStage) {
    const int64_t n = std::min(kStage, n_points - s0);
    for (int64_t k = 0; k < n; ++k) {
      cell_corners<D, HASHED>(x + (s0 + k) * D, level, hash_mask, index[k], weight[k]);
      for (int c = 0; c < C; ++c) __builtin_prefetch(grad_level + (int64_t)index[k][c] * F, 1, 3);
    }
    for (int64_t k = 0; k < n; ++k) {
      const float* g = grad_out + (s0 + k) * grad_stride;
      for (int c = 0; c < C; ++c) {
        float* row = grad_level + (int64_t)index[k][c] * F;
        for (int f = 0; f < F; ++f) row[f] += weight[k][c] * g[f];
      }
    }
  }
}

template <int D, int F>
void forward_impl(const float* x, const float* table, float* out, int64_t n_points, const std::vector<Level>& levels,
                  int64_t table_size) {
  const int64_t n_levels = (int64_t)levels.size();
  const uint32_t hash_mask = (uint32_t)(table_size - 1);
  const int64_t n_blocks = (n_points + kForwardBlock - 1) / kForwardBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t task = 0; task < n_levels * n_blocks; ++task) {
    const int64_t l = task / n_blocks, i0 = (task % n_blocks) * kForwardBlock;
    const int64_t i1 = std::min(n_points, i0 + kForwardBlock);
    const float* table_level = table + l * table_size * F;
    if (levels[l].hashed) {
      encode_level<D, F, true>(x, i0, i1, levels[l], hash_mask, table_level, out + l * F, n_levels * F);
    } else {
      encode_level<D, F, false>(x, i0, i1, levels[l], hash_mask, table_level, out + l * F, n_levels * F);
    }
  }
}

// Each level is one task that owns its rows of the gradient: no atomics, and every row sums its
// contributions in point order, so the result does not depend on the thread count.
template <int D, int F>
void backward_impl(const float* x, const float* grad_out, float* grad_table, int64_t n_points,
                   const std::vector<Level>& levels, int64_t table_size) {
  const int64_t n_levels = (int64_t)levels.size();
  const uint32_t hash_mask = (uint32_t)(table_size - 1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t l = 0; l < n_levels; ++l) {
    float* grad_level = grad_table + l * table_size * F;
    std::memset(grad_level, 0, sizeof(float) * table_size * F);
    if (levels[l].hashed) {
      scatter_level<D, F, true>(x, grad_out + l * F, n_points, levels[l], hash_mask, grad_level, n_levels * F);
    } else {
      scatter_level<D, F, false>(x, grad_out + l * F, n_points, levels[l], hash_mask, grad_level, n_levels * F);
    }
  }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& table, int64_t n_levels, int64_t table_size) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hash_grid: the CPU kernel needs CPU tensors");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && table.scalar_type() == torch::kFloat32,
              "hash_grid: x and table must be float32");
  TORCH_CHECK(x.dim() == 2 && (x.size(1) == 3 || x.size(1) == 4), "hash_grid: x must be (N, 3) or (N, 4), got ",
              x.sizes());
  TORCH_CHECK(table.dim() == 2 && table.size(0) == n_levels * table_size, "hash_grid: table must have ",
              n_levels * table_size, " rows, got ", table.sizes());
  TORCH_CHECK(table_size > 0 && (table_size & (table_size - 1)) == 0 && table_size <= (int64_t(1) << 31),
              "hash_grid: table_size must be a power of two");
  TORCH_CHECK(x.is_contiguous() && table.is_contiguous(), "hash_grid: x and table must be contiguous");
}

#define HASH_GRID_DISPATCH(D_VALUE, F_VALUE, FN, ...)                                  \
  do {                                                                                  \
    if (D_VALUE == 3) {                                                                 \
      switch (F_VALUE) {                                                                \
        case 1: FN<3, 1>(__VA_ARGS__); break;                                           \
        case 2: FN<3, 2>(__VA_ARGS__); break;                                           \
        case 4: FN<3, 4>(__VA_ARGS__); break;                                           \
        case 8: FN<3, 8>(__VA_ARGS__); break;                                           \
        default: TORCH_CHECK(false, "hash_grid: features per level must be 1, 2, 4 or 8"); \
      }                                                                                 \
    } else {                                                                            \
      switch (F_VALUE) {                                                                \
        case 1: FN<4, 1>(__VA_ARGS__); break;                                           \
        case 2: FN<4, 2>(__VA_ARGS__); break;                                           \
        case 4: FN<4, 4>(__VA_ARGS__); break;                                           \
        case 8: FN<4, 8>(__VA_ARGS__); break;                                           \
        default: TORCH_CHECK(false, "hash_grid: features per level must be 1, 2, 4 or 8"); \
      }                                                                                 \
    }                                                                                   \
  } while (0)

}  // namespace

// x: (N, D) float32 in [0, 1]; table: (n_levels * table_size, F) float32.
// Returns (N, n_levels * F) float32.
torch::Tensor hash_grid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor resolutions,
                                torch::Tensor sizes, torch::Tensor hashed, int64_t table_size) {
  const auto levels = read_levels(scales, resolutions, sizes, hashed);
  const int64_t n_levels = (int64_t)levels.size();
  check_inputs(x, table, n_levels, table_size);
  const int64_t n_points = x.size(0), D = x.size(1), F = table.size(1);
  auto out = torch::empty({n_points, n_levels * F}, x.options());
  HASH_GRID_DISPATCH(D, F, forward_impl, x.data_ptr<float>(), table.data_ptr<float>(), out.data_ptr<float>(), n_points,
                     levels, table_size);
  return out;
}

// grad_out: (N, n_levels * F). Returns the gradient of the table, (n_levels * table_size, F).
torch::Tensor hash_grid_backward(torch::Tensor x, torch::Tensor grad_out, int64_t n_features, torch::Tensor scales,
                                 torch::Tensor resolutions, torch::Tensor sizes, torch::Tensor hashed,
                                 int64_t table_size) {
  const auto levels = read_levels(scales, resolutions, sizes, hashed);
  const int64_t n_levels = (int64_t)levels.size();
  const int64_t n_points = x.size(0), D = x.size(1), F = n_features;
  auto grad_table = torch::empty({n_levels * table_size, F}, x.options());
  check_inputs(x, grad_table, n_levels, table_size);
  TORCH_CHECK(grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() && grad_out.dim() == 2 &&
                  grad_out.size(0) == n_points && grad_out.size(1) == n_levels * F,
              "hash_grid: grad_out must be contiguous float32 (N, n_levels * F), got ", grad_out.sizes());
  HASH_GRID_DISPATCH(D, F, backward_impl, x.data_ptr<float>(), grad_out.data_ptr<float>(), grad_table.data_ptr<float>(),
                     n_points, levels, table_size);
  return grad_table;
}

// The machine's random-gather rate on a table of the same shape (benchmarks/hash_grid.py):
// out[i] = table[index[i]], rows of F floats, in parallel over i. The loads are independent, so
// the out-of-order core keeps many in flight; software prefetching measured no better.
torch::Tensor random_gather(torch::Tensor table, torch::Tensor index) {
  TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == torch::kFloat32 && table.dim() == 2 &&
                  table.is_contiguous(),
              "random_gather: table must be a contiguous CPU float32 (R, F) tensor");
  TORCH_CHECK(index.scalar_type() == torch::kInt32 && index.dim() == 1 && index.is_contiguous(),
              "random_gather: index must be a contiguous int32 vector");
  const int64_t n = index.size(0), F = table.size(1);
  auto out = torch::empty({n, F}, table.options());
  const float* t = table.data_ptr<float>();
  const int32_t* idx = index.data_ptr<int32_t>();
  float* o = out.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) {
    const float* row = t + (int64_t)idx[i] * F;
    for (int64_t f = 0; f < F; ++f) o[i * F + f] = row[f];
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hash_grid_forward, "multi-resolution hash encoding, forward (CPU)");
  m.def("backward", &hash_grid_backward, "multi-resolution hash encoding, gradient of the table (CPU)");
  m.def("random_gather", &random_gather, "random row gather, the ceiling for the encoding's access pattern");
}
