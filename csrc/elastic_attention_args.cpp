// Argument checks of elastic_attention shared by the CPU, CUDA and Meta kernels, and the host-side
// index checks of the CPU kernel (values of rows / window / tracked / block_table).
#include <ATen/ATen.h>

#include <vector>

#include "elastic_attention.h"

namespace vllm_elastic {
namespace {

void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 1, name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, name,
                    " must be int64 or int32, got ", t.scalar_type());
}

void check_same(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == q.scalar_type(), name, " has dtype ", t.scalar_type(),
                    " but q has ", q.scalar_type());
  TORCH_CHECK_VALUE(t.device() == q.device(), name, " is on ", t.device(), " but q is on ",
                    q.device());
}

}  // namespace

AttnDims check_args(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                    const at::Tensor& rows, const at::Tensor& key_cache,
                    const at::Tensor& value_cache, const at::Tensor& block_table, int64_t n,
                    const at::Tensor& window, const at::Tensor& tracked, const at::Tensor& prev_q) {
  TORCH_CHECK_VALUE(q.dim() == 3, "q must be [T, H, dh], got shape ", q.sizes());
  const auto st = q.scalar_type();
  TORCH_CHECK_VALUE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf,
                    "q must be float32, bfloat16 or float16, got ", st);
  AttnDims d;
  d.T = q.size(0);
  d.H = q.size(1);
  d.dh = q.size(2);
  d.n = n;
  TORCH_CHECK_VALUE(k_new.dim() == 3 && k_new.size(0) == d.T && k_new.size(2) == d.dh,
                    "k_new must be [T, Hkv, dh] = [", d.T, ", Hkv, ", d.dh, "], got ",
                    k_new.sizes());
  d.Hkv = k_new.size(1);
  TORCH_CHECK_VALUE(d.Hkv > 0 && d.H % d.Hkv == 0, "H (", d.H, ") must be a multiple of Hkv (",
                    d.Hkv, ")");
  TORCH_CHECK_VALUE(v_new.sizes() == k_new.sizes(), "v_new must have k_new's shape ", k_new.sizes(),
                    ", got ", v_new.sizes());
  check_same(k_new, q, "k_new");
  check_same(v_new, q, "v_new");
  check_index(rows, "rows");
  TORCH_CHECK_VALUE(rows.size(0) == d.T, "rows must have T = ", d.T, " entries, got ",
                    rows.size(0));
  TORCH_CHECK_VALUE(n >= d.T, "n (", n, ") must be at least the number of rows (", d.T, ")");
  TORCH_CHECK_VALUE(key_cache.dim() == 4,
                    "key_cache must be [num_blocks, Hkv, block_size, dh], got ", key_cache.sizes());
  TORCH_CHECK_VALUE(value_cache.sizes() == key_cache.sizes(),
                    "value_cache must have key_cache's shape ", key_cache.sizes(), ", got ",
                    value_cache.sizes());
  check_same(key_cache, q, "key_cache");
  check_same(value_cache, q, "value_cache");
  d.num_blocks = key_cache.size(0);
  d.block_size = key_cache.size(2);
  if (d.num_blocks > 0) {
    TORCH_CHECK_VALUE(key_cache.size(1) == d.Hkv && key_cache.size(3) == d.dh,
                      "key_cache must be [num_blocks, Hkv=", d.Hkv, ", block_size, dh=", d.dh,
                      "], got ", key_cache.sizes());
  }
  check_index(block_table, "block_table");
  check_index(window, "window");
  check_index(tracked, "tracked");
  d.W = window.size(0);
  d.R = tracked.size(0);
  d.drift = prev_q.numel() > 0;
  if (d.drift) {
    TORCH_CHECK_VALUE(prev_q.dim() == 3 && prev_q.size(0) == d.R && prev_q.size(1) == d.H &&
                          prev_q.size(2) == d.dh,
                      "prev_q must be [R, H, dh] = [", d.R, ", ", d.H, ", ", d.dh, "], got ",
                      prev_q.sizes());
    check_same(prev_q, q, "prev_q");
  }
  return d;
}

std::vector<int64_t> drift_shape(const AttnDims& d, bool cosine_over_heads) {
  if (!d.drift) return {0};
  if (cosine_over_heads) return {3, d.R, d.n};
  return {2};
}

// Rows must be distinct positions in [0, n); returns pos_row[n] (row of each position or -1).
std::vector<int32_t> position_rows(const at::Tensor& rows, int64_t n) {
  std::vector<int32_t> pos_row(n, -1);
  const int64_t* r = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    TORCH_CHECK_VALUE(r[i] >= 0 && r[i] < n, "rows[", i, "] = ", r[i], " is outside [0, n=", n,
                      ")");
    TORCH_CHECK_VALUE(pos_row[r[i]] < 0, "rows must be distinct: position ", r[i],
                      " appears twice");
    pos_row[r[i]] = static_cast<int32_t>(i);
  }
  return pos_row;
}

void check_range(const at::Tensor& idx, int64_t hi, const char* name, const char* what) {
  const int64_t* v = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    TORCH_CHECK_VALUE(v[i] >= 0 && v[i] < hi, name, "[", i, "] = ", v[i], " is outside [0, ", what,
                      "=", hi, ")");
  }
}

// A cache view whose dh dimension is not contiguous is copied (rare: vLLM's pages have dh
// innermost).
at::Tensor dh_contiguous(const at::Tensor& cache) {
  return cache.size(3) <= 1 || cache.stride(3) == 1 ? cache : cache.contiguous();
}

}  // namespace vllm_elastic
