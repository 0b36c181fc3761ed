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

// A 1-D or 2-D int index (varlen).
void check_index2(const at::Tensor& t, int64_t dim, const char* name, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", shape, ", got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, name,
                    " must be int64 or int32, got ", t.scalar_type());
}

void check_device(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK_VALUE(t.device() == q.device(), name, " is on ", t.device(), " but q is on ",
                    q.device());
}

void check_same(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == q.scalar_type(), name, " has dtype ", t.scalar_type(),
                    " but q has ", q.scalar_type());
  TORCH_CHECK_VALUE(t.device() == q.device(), name, " is on ", t.device(), " but q is on ",
                    q.device());
}

// q [T, H, dh] in an op dtype; k_new, v_new [T, Hkv, dh] with H % Hkv == 0. Fills T, H, Hkv, dh.
void check_qkv(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new, AttnDims& d) {
  TORCH_CHECK_VALUE(q.dim() == 3, "q must be [T, H, dh], got shape ", q.sizes());
  const auto st = q.scalar_type();
  TORCH_CHECK_VALUE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf,
                    "q must be float32, bfloat16 or float16, got ", st);
  d.T = q.size(0);
  d.H = q.size(1);
  d.dh = q.size(2);
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
}

// Pages [num_blocks, Hkv, block_size, dh] (any shape when num_blocks = 0: never read). Fills
// num_blocks and block_size.
void check_caches(const at::Tensor& key_cache, const at::Tensor& value_cache, const at::Tensor& q,
                  AttnDims& d) {
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
}

}  // namespace

AttnDims check_args(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                    const at::Tensor& rows, const at::Tensor& key_cache,
                    const at::Tensor& value_cache, const at::Tensor& block_table, int64_t n,
                    const at::Tensor& window, const at::Tensor& tracked, const at::Tensor& prev_q) {
  AttnDims d;
  check_qkv(q, k_new, v_new, d);
  d.n = n;
  check_index(rows, "rows");
  TORCH_CHECK_VALUE(rows.size(0) == d.T, "rows must have T = ", d.T, " entries, got ",
                    rows.size(0));
  TORCH_CHECK_VALUE(n >= d.T, "n (", n, ") must be at least the number of rows (", d.T, ")");
  check_caches(key_cache, value_cache, q, d);
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

VarlenDims check_varlen_args(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                             const at::Tensor& row_seq, const at::Tensor& row_pos,
                             const at::Tensor& cu_rows, int64_t max_rows,
                             const at::Tensor& key_cache, const at::Tensor& value_cache,
                             const at::Tensor& block_tables, const at::Tensor& seq_lens,
                             int64_t max_len, const at::Tensor& reads_cache,
                             const at::Tensor& window, const at::Tensor& tracked,
                             const at::Tensor& prev_q) {
  AttnDims a;
  check_qkv(q, k_new, v_new, a);
  check_caches(key_cache, value_cache, q, a);
  VarlenDims d{a.T, a.H, a.Hkv, a.dh, 0, 0, 0, max_rows, max_len, 0, a.block_size, a.num_blocks};
  check_index2(seq_lens, 1, "seq_lens", "[R]");
  d.R = seq_lens.size(0);
  check_index2(row_seq, 1, "row_seq", "[T]");
  check_index2(row_pos, 1, "row_pos", "[T]");
  TORCH_CHECK_VALUE(row_seq.size(0) == d.T && row_pos.size(0) == d.T, "row_seq and row_pos must ",
                    "have T = ", d.T, " entries, got ", row_seq.size(0), " and ", row_pos.size(0));
  check_index2(cu_rows, 1, "cu_rows", "[R + 1]");
  TORCH_CHECK_VALUE(cu_rows.size(0) == d.R + 1, "cu_rows must have R + 1 = ", d.R + 1,
                    " entries, got ", cu_rows.size(0));
  check_index2(block_tables, 2, "block_tables", "[R, max_blocks]");
  TORCH_CHECK_VALUE(block_tables.size(0) == d.R, "block_tables must have R = ", d.R, " rows, got ",
                    block_tables.size(0));
  d.max_blocks = block_tables.size(1);
  TORCH_CHECK_VALUE(reads_cache.dim() == 1 && reads_cache.size(0) == d.R &&
                        reads_cache.scalar_type() == at::kBool,
                    "reads_cache must be bool [R = ", d.R, "], got ", reads_cache.scalar_type(),
                    " ", reads_cache.sizes());
  check_index2(window, 2, "window", "[R, W]");
  check_index2(tracked, 2, "tracked", "[R, K]");
  TORCH_CHECK_VALUE(window.size(0) == d.R && tracked.size(0) == d.R,
                    "window and tracked must have R = ", d.R, " rows, got ", window.sizes(),
                    " and ", tracked.sizes());
  d.W = window.size(1);
  d.K = tracked.size(1);
  TORCH_CHECK_VALUE(prev_q.dim() == 4 && prev_q.size(0) == d.R && prev_q.size(1) == d.K &&
                        prev_q.size(2) == d.H && prev_q.size(3) == d.dh,
                    "prev_q must be [R, K, H, dh] = [", d.R, ", ", d.K, ", ", d.H, ", ", d.dh,
                    "], got ", prev_q.sizes());
  check_same(prev_q, q, "prev_q");
  TORCH_CHECK_VALUE(max_rows >= 0 && max_len >= 0, "max_rows (", max_rows, ") and max_len (",
                    max_len, ") must not be negative");
  const std::pair<const at::Tensor*, const char*> indices[] = {{&row_seq, "row_seq"},
                                                               {&row_pos, "row_pos"},
                                                               {&cu_rows, "cu_rows"},
                                                               {&seq_lens, "seq_lens"},
                                                               {&block_tables, "block_tables"},
                                                               {&reads_cache, "reads_cache"},
                                                               {&window, "window"},
                                                               {&tracked, "tracked"}};
  for (const auto& [t, name] : indices) check_device(*t, q, name);
  return d;
}

namespace {

// Each present entry of a [R, width] row index (window / tracked) is a row of its own sequence.
void check_seq_rows(const at::Tensor& idx, const int64_t* cu, const char* name) {
  const int64_t width = idx.size(1);
  const int64_t* v = idx.data_ptr<int64_t>();
  for (int64_t s = 0; s < idx.size(0); ++s) {
    for (int64_t j = 0; j < width; ++j) {
      const int64_t r = v[s * width + j];
      TORCH_CHECK_VALUE(r == -1 || (r >= cu[s] && r < cu[s + 1]), name, "[", s, ", ", j, "] = ", r,
                        " is neither -1 nor a row of sequence ", s, " [", cu[s], ", ", cu[s + 1],
                        ")");
    }
  }
}

}  // namespace

// Host-side value checks of the varlen indices (CPU, contiguous, int64; reads_cache bool).
std::vector<int32_t> varlen_position_rows(const VarlenDims& d, const at::Tensor& row_seq,
                                          const at::Tensor& row_pos, const at::Tensor& cu_rows,
                                          const at::Tensor& seq_lens,
                                          const at::Tensor& block_tables,
                                          const at::Tensor& reads_cache, const at::Tensor& window,
                                          const at::Tensor& tracked) {
  const int64_t *cu = cu_rows.data_ptr<int64_t>(), *lens = seq_lens.data_ptr<int64_t>();
  const int64_t *seq = row_seq.data_ptr<int64_t>(), *pos = row_pos.data_ptr<int64_t>();
  const int64_t* bt = block_tables.data_ptr<int64_t>();
  const bool* reads = reads_cache.data_ptr<bool>();
  TORCH_CHECK_VALUE(cu[0] == 0 && cu[d.R] == d.T, "cu_rows must run from 0 to T = ", d.T, ", got ",
                    cu[0], " .. ", cu[d.R]);
  std::vector<int32_t> pos_row(d.R * d.max_len, -1);
  for (int64_t s = 0; s < d.R; ++s) {
    const int64_t len = lens[s];
    TORCH_CHECK_VALUE(cu[s] <= cu[s + 1] && cu[s + 1] - cu[s] <= d.max_rows, "sequence ", s,
                      " has rows [", cu[s], ", ", cu[s + 1],
                      ") in cu_rows: not 0 to max_rows = ", d.max_rows, " rows");
    TORCH_CHECK_VALUE(len >= 0 && len <= d.max_len, "seq_lens[", s, "] = ", len,
                      " is outside [0, max_len = ", d.max_len, "]");
    for (int64_t i = cu[s]; i < cu[s + 1]; ++i) {
      TORCH_CHECK_VALUE(seq[i] == s, "row_seq[", i, "] = ", seq[i], " but cu_rows puts row ", i,
                        " in sequence ", s);
      TORCH_CHECK_VALUE(pos[i] >= 0 && pos[i] < len, "row_pos[", i, "] = ", pos[i],
                        " is outside [0, seq_lens[", s, "] = ", len, ")");
      int32_t& cell = pos_row[s * d.max_len + pos[i]];
      TORCH_CHECK_VALUE(cell < 0, "rows must be distinct: sequence ", s, " has position ", pos[i],
                        " twice");
      cell = static_cast<int32_t>(i);
    }
    if (!reads[s]) continue;
    const int64_t used = d.block_size > 0 ? (len + d.block_size - 1) / d.block_size : 0;
    TORCH_CHECK_VALUE(len == 0 || (d.block_size > 0 && d.num_blocks > 0), "sequence ", s,
                      " reads its cache but the caches have ", d.num_blocks, " blocks of ",
                      d.block_size);
    TORCH_CHECK_VALUE(used <= d.max_blocks, "block_tables has ", d.max_blocks,
                      " columns but sequence ", s, " of length ", len, " needs ", used);
    for (int64_t j = 0; j < used; ++j) {
      const int64_t b = bt[s * d.max_blocks + j];
      TORCH_CHECK_VALUE(b >= 0 && b < d.num_blocks, "block_tables[", s, ", ", j, "] = ", b,
                        " is outside [0, num_blocks = ", d.num_blocks, ")");
    }
  }
  check_seq_rows(window, cu, "window");
  check_seq_rows(tracked, cu, "tracked");
  return pos_row;
}

// A cache view whose dh dimension is not contiguous is copied (rare: vLLM's pages have dh
// innermost).
at::Tensor dh_contiguous(const at::Tensor& cache) {
  return cache.size(3) <= 1 || cache.stride(3) == 1 ? cache : cache.contiguous();
}

}  // namespace vllm_elastic
