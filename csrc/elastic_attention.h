// The fused Elastic-Cache attention ops (elastic_attention_varlen for a batch, elastic_attention
// for one sequence): shared declarations of the CPU, CUDA and Meta kernels. Semantics: the torch
// twins in vllm_elastic/core/elastic_attention.py.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

// The dtypes of the op (float32, float16, bfloat16; not float64): AT_DISPATCH over exactly these,
// so that no kernel is instantiated for a dtype check_args rejects. Needs <ATen/Dispatch.h>.
#define ELASTIC_DISPATCH(TYPE, NAME, ...)                                        \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                                 \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE( \
                         at::kHalf, __VA_ARGS__) AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace vllm_elastic {

using AttnResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // (o, mass, drift)
// (o, mass, heads, keys) of elastic_attention_varlen
using VarlenResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Sizes of one call, read from the validated shapes.
struct AttnDims {
  int64_t T = 0;    // query rows
  int64_t H = 0;    // query heads
  int64_t Hkv = 0;  // kv heads (H % Hkv == 0)
  int64_t dh = 0;   // head size
  int64_t n = 0;    // keys (positions of the sequence)
  int64_t W = 0;    // window rows
  int64_t R = 0;    // tracked rows
  int64_t block_size = 0;
  int64_t num_blocks = 0;
  bool drift = false;  // prev_q is non-empty: the drift statistic is computed
};

// Sizes of one varlen call (a batch of R sequences), read from the validated shapes.
struct VarlenDims {
  int64_t T, H, Hkv, dh;  // packed query rows, query heads, kv heads, head size
  int64_t R, W, K;        // sequences, window / tracked slots per sequence (-1: absent)
  int64_t max_rows, max_len, max_blocks;
  int64_t block_size, num_blocks;
};

// Shape, dtype and device checks shared by every backend (TORCH_CHECK with the argument's name).
// Does not read tensor values: the CPU kernel checks rows / window / tracked / block ids itself.
AttnDims check_args(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                    const at::Tensor& rows, const at::Tensor& key_cache,
                    const at::Tensor& value_cache, const at::Tensor& block_table, int64_t n,
                    const at::Tensor& window, const at::Tensor& tracked, const at::Tensor& prev_q);

// Shape, dtype and device checks of elastic_attention_varlen shared by every backend; every index
// tensor must be on q's device. Does not read tensor values (varlen_position_rows does).
VarlenDims check_varlen_args(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                             const at::Tensor& row_seq, const at::Tensor& row_pos,
                             const at::Tensor& cu_rows, int64_t max_rows,
                             const at::Tensor& key_cache, const at::Tensor& value_cache,
                             const at::Tensor& block_tables, const at::Tensor& seq_lens,
                             int64_t max_len, const at::Tensor& reads_cache,
                             const at::Tensor& window, const at::Tensor& tracked,
                             const at::Tensor& prev_q);

// Host-side value checks of the varlen indices (CPU tensors: int64 contiguous, reads_cache bool):
// cu_rows / row_seq agree, positions distinct and inside their sequence, the used blocks of the
// sequences that read their cache in range, window / tracked -1 or a row of their sequence.
// Returns pos_row[R * max_len]: the packed row of (sequence, position), or -1.
std::vector<int32_t> varlen_position_rows(const VarlenDims& d, const at::Tensor& row_seq,
                                          const at::Tensor& row_pos, const at::Tensor& cu_rows,
                                          const at::Tensor& seq_lens,
                                          const at::Tensor& block_tables,
                                          const at::Tensor& reads_cache, const at::Tensor& window,
                                          const at::Tensor& tracked);

// Host-side value checks (CPU tensors, int64): rows must be distinct positions in [0, n); returns
// pos_row[n], the row of each position or -1. check_range: every idx[i] in [0, hi).
std::vector<int32_t> position_rows(const at::Tensor& rows, int64_t n);
void check_range(const at::Tensor& idx, int64_t hi, const char* name, const char* what);

// A cache view whose dh dimension is not contiguous is copied (rare: vLLM's pages have dh
// innermost).
at::Tensor dh_contiguous(const at::Tensor& cache);

// drift's shape: [0] without prev_q; [3, R, n] in head mode; [2] in key mode.
std::vector<int64_t> drift_shape(const AttnDims& d, bool cosine_over_heads);

AttnResult elastic_attention_cpu(const at::Tensor& q, const at::Tensor& k_new,
                                 const at::Tensor& v_new, const at::Tensor& rows,
                                 const at::Tensor& key_cache, const at::Tensor& value_cache,
                                 const at::Tensor& block_table, int64_t n, const at::Tensor& window,
                                 const at::Tensor& tracked, const at::Tensor& prev_q,
                                 bool cosine_over_heads);

AttnResult elastic_attention_meta(const at::Tensor& q, const at::Tensor& k_new,
                                  const at::Tensor& v_new, const at::Tensor& rows,
                                  const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& block_table, int64_t n,
                                  const at::Tensor& window, const at::Tensor& tracked,
                                  const at::Tensor& prev_q, bool cosine_over_heads);

// elastic_attention_varlen (spec: core/elastic_attention.py elastic_attention_varlen_ref).
VarlenResult elastic_attention_varlen_cpu(const at::Tensor& q, const at::Tensor& k_new,
                                          const at::Tensor& v_new, const at::Tensor& row_seq,
                                          const at::Tensor& row_pos, const at::Tensor& cu_rows,
                                          int64_t max_rows, const at::Tensor& key_cache,
                                          const at::Tensor& value_cache,
                                          const at::Tensor& block_tables,
                                          const at::Tensor& seq_lens, int64_t max_len,
                                          const at::Tensor& reads_cache, const at::Tensor& window,
                                          const at::Tensor& tracked, const at::Tensor& prev_q);

VarlenResult elastic_attention_varlen_meta(const at::Tensor& q, const at::Tensor& k_new,
                                           const at::Tensor& v_new, const at::Tensor& row_seq,
                                           const at::Tensor& row_pos, const at::Tensor& cu_rows,
                                           int64_t max_rows, const at::Tensor& key_cache,
                                           const at::Tensor& value_cache,
                                           const at::Tensor& block_tables,
                                           const at::Tensor& seq_lens, int64_t max_len,
                                           const at::Tensor& reads_cache, const at::Tensor& window,
                                           const at::Tensor& tracked, const at::Tensor& prev_q);

}  // namespace vllm_elastic
