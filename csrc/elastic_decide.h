// elastic_decide: one layer's Elastic-Cache decisions for a batch (most-attended keys, drift
// similarity, refresh triggers) in one call. Semantics: the torch twin
// vllm_elastic/core/policy.py decide_layer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace vllm_elastic {

// (attended [R, width], similarity [R] float64, refresh_from [R], deferred_from [R])
using DecideResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

DecideResult elastic_decide_cpu(const at::Tensor& mass, const at::Tensor& heads_part,
                                const at::Tensor& keys_part, const at::Tensor& still_masked,
                                const at::Tensor& key_invalid, const at::Tensor& kept,
                                const at::Tensor& pair_invalid, const at::Tensor& pair_count,
                                const at::Tensor& over_heads, int64_t over_heads_all,
                                const at::Tensor& can_test, const at::Tensor& defer,
                                const at::Tensor& gamma, const at::Tensor& refresh_from,
                                const at::Tensor& deferred_from, int64_t layer,
                                int64_t num_layers);

DecideResult elastic_decide_meta(const at::Tensor& mass, const at::Tensor& heads_part,
                                 const at::Tensor& keys_part, const at::Tensor& still_masked,
                                 const at::Tensor& key_invalid, const at::Tensor& kept,
                                 const at::Tensor& pair_invalid, const at::Tensor& pair_count,
                                 const at::Tensor& over_heads, int64_t over_heads_all,
                                 const at::Tensor& can_test, const at::Tensor& defer,
                                 const at::Tensor& gamma, const at::Tensor& refresh_from,
                                 const at::Tensor& deferred_from, int64_t layer,
                                 int64_t num_layers);

}  // namespace vllm_elastic
