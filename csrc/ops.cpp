// Registers torch.ops.vllm_elastic.elastic_attention and elastic_attention_varlen (CPU and Meta
// here, CUDA in the .cu), elastic_decide and write_cells (CPU and Meta; on other devices ops.py
// runs their twins), and makes the shared library importable as the Python module
// vllm_elastic._C: importing it runs the TORCH_LIBRARY static registrations below.
#include <ATen/ATen.h>
#include <Python.h>
#include <torch/library.h>

#include "elastic_attention.h"
#include "elastic_decide.h"
#include "write_cells.h"

namespace vllm_elastic {

AttnResult elastic_attention_meta(const at::Tensor& q, const at::Tensor& k_new,
                                  const at::Tensor& v_new, const at::Tensor& rows,
                                  const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& block_table, int64_t n,
                                  const at::Tensor& window, const at::Tensor& tracked,
                                  const at::Tensor& prev_q, bool cosine_over_heads) {
  const AttnDims d = check_args(q, k_new, v_new, rows, key_cache, value_cache, block_table, n,
                                window, tracked, prev_q);
  const auto f32 = q.options().dtype(at::kFloat);
  return {at::empty({d.T, d.H, d.dh}, q.options()), at::empty({d.n}, f32),
          at::empty(drift_shape(d, cosine_over_heads), f32)};
}

VarlenResult elastic_attention_varlen_meta(const at::Tensor& q, const at::Tensor& k_new,
                                           const at::Tensor& v_new, const at::Tensor& row_seq,
                                           const at::Tensor& row_pos, const at::Tensor& cu_rows,
                                           int64_t max_rows, const at::Tensor& key_cache,
                                           const at::Tensor& value_cache,
                                           const at::Tensor& block_tables,
                                           const at::Tensor& seq_lens, int64_t max_len,
                                           const at::Tensor& reads_cache, const at::Tensor& window,
                                           const at::Tensor& tracked, const at::Tensor& prev_q) {
  const VarlenDims d = check_varlen_args(q, k_new, v_new, row_seq, row_pos, cu_rows, max_rows,
                                         key_cache, value_cache, block_tables, seq_lens, max_len,
                                         reads_cache, window, tracked, prev_q);
  const auto f32 = q.options().dtype(at::kFloat);
  return {at::empty({d.T, d.H, d.dh}, q.options()), at::empty({d.R, d.max_len}, f32),
          at::empty({3, d.R, d.K, d.max_len}, f32), at::empty({2, d.R}, f32)};
}

}  // namespace vllm_elastic

TORCH_LIBRARY(vllm_elastic, m) {
  m.def(
      "elastic_attention(Tensor q, Tensor k_new, Tensor v_new, Tensor rows, Tensor key_cache, "
      "Tensor value_cache, Tensor block_table, int n, Tensor window, Tensor tracked, "
      "Tensor prev_q, bool cosine_over_heads) -> (Tensor, Tensor, Tensor)");
  m.def(
      "elastic_attention_varlen(Tensor q, Tensor k_new, Tensor v_new, Tensor row_seq, "
      "Tensor row_pos, Tensor cu_rows, int max_rows, Tensor key_cache, Tensor value_cache, "
      "Tensor block_tables, Tensor seq_lens, int max_len, Tensor reads_cache, Tensor window, "
      "Tensor tracked, Tensor prev_q) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "elastic_decide(Tensor mass, Tensor heads_part, Tensor keys_part, Tensor still_masked, "
      "Tensor key_invalid, Tensor kept, Tensor pair_invalid, Tensor pair_count, "
      "Tensor over_heads, int over_heads_all, Tensor can_test, Tensor defer, Tensor gamma, "
      "Tensor refresh_from, Tensor deferred_from, int layer, int num_layers) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "write_cells(Tensor(a!) page, Tensor blocks, Tensor offsets, Tensor rows, Tensor values) "
      "-> ()");
}

TORCH_LIBRARY_IMPL(vllm_elastic, CPU, m) {
  m.impl("elastic_attention", &vllm_elastic::elastic_attention_cpu);
  m.impl("elastic_attention_varlen", &vllm_elastic::elastic_attention_varlen_cpu);
  m.impl("elastic_decide", &vllm_elastic::elastic_decide_cpu);
  m.impl("write_cells", &vllm_elastic::write_cells_cpu);
}

TORCH_LIBRARY_IMPL(vllm_elastic, Meta, m) {
  m.impl("elastic_attention", &vllm_elastic::elastic_attention_meta);
  m.impl("elastic_attention_varlen", &vllm_elastic::elastic_attention_varlen_meta);
  m.impl("elastic_decide", &vllm_elastic::elastic_decide_meta);
  m.impl("write_cells", &vllm_elastic::write_cells_meta);
}

// A module with no Python functions: the ops live in torch.ops.vllm_elastic.
static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C", "vllm_elastic custom ops", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }
