// CPU kernel of elastic_decide (spec: vllm_elastic/core/policy.py decide_layer). The twin is about
// forty small tensor ops per layer; here it is one pass over each sequence's statistics, plus
// at::topk for the most-attended keys (the twin's own selection, so that ties resolve alike).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "elastic_decide.h"

namespace vllm_elastic {
namespace {

constexpr float kNormEps = 1e-8f;  // F.cosine_similarity's eps, as policy.COSINE_EPS

void check(const at::Tensor& t, at::ScalarType dtype, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "elastic_decide: ", name, " must be ", dtype,
                    ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, "elastic_decide: ", name, " must be ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device().is_cpu(), "elastic_decide: ", name, " must be on the CPU");
}

// Sizes, after every argument's dtype and shape is checked against mass [R, N].
struct DecideDims {
  int64_t R, N, K, width;
};

DecideDims check_decide_args(const at::Tensor& mass, const at::Tensor& heads_part,
                             const at::Tensor& keys_part, const at::Tensor& still_masked,
                             const at::Tensor& key_invalid, const at::Tensor& kept,
                             const at::Tensor& pair_invalid, const at::Tensor& pair_count,
                             const at::Tensor& over_heads, const at::Tensor& can_test,
                             const at::Tensor& defer, const at::Tensor& gamma,
                             const at::Tensor& refresh_from, const at::Tensor& deferred_from) {
  TORCH_CHECK_VALUE(mass.dim() == 2, "elastic_decide: mass must be [R, N], got ", mass.sizes());
  TORCH_CHECK_VALUE(heads_part.dim() == 4, "elastic_decide: heads_part must be [3, R, K, N]");
  TORCH_CHECK_VALUE(kept.dim() == 2, "elastic_decide: kept must be [R, width]");
  const DecideDims d{mass.size(0), mass.size(1), heads_part.size(2), kept.size(1)};
  TORCH_CHECK_VALUE(d.width <= d.N, "elastic_decide: kept is wider than the keys");
  check(mass, at::kFloat, {d.R, d.N}, "mass");
  check(heads_part, at::kFloat, {3, d.R, d.K, d.N}, "heads_part");
  check(keys_part, at::kFloat, {2, d.R}, "keys_part");
  check(still_masked, at::kBool, {d.R, d.N}, "still_masked");
  check(key_invalid, at::kBool, {d.R, d.N}, "key_invalid");
  check(kept, at::kBool, {d.R, d.width}, "kept");
  if (d.K > 0) {
    check(pair_invalid, at::kBool, {d.R, d.K, d.N}, "pair_invalid");
    check(pair_count, at::kLong, {d.R}, "pair_count");
  }
  check(over_heads, at::kBool, {d.R}, "over_heads");
  check(can_test, at::kBool, {d.R}, "can_test");
  check(defer, at::kBool, {d.R}, "defer");
  check(gamma, at::kDouble, {d.R}, "gamma");
  check(refresh_from, at::kLong, {d.R}, "refresh_from");
  check(deferred_from, at::kLong, {d.R}, "deferred_from");
  return d;
}

// The twin's head-mode similarity of one sequence: the cosine over the heads of every valid
// (tracked row, key) pair, in float32 as the twin computes it, averaged in float64.
double head_cosine(const float* ab, const float* aa, const float* bb, const bool* invalid,
                   int64_t pairs, int64_t count) {
  double total = 0;
  for (int64_t i = 0; i < pairs; ++i) {
    if (invalid[i]) continue;
    const float norms = std::max(std::sqrt(aa[i]), kNormEps) * std::max(std::sqrt(bb[i]), kNormEps);
    total += static_cast<double>(ab[i] / norms);
  }
  return total / static_cast<double>(count);
}

}  // namespace

DecideResult elastic_decide_cpu(const at::Tensor& mass, const at::Tensor& heads_part,
                                const at::Tensor& keys_part, const at::Tensor& still_masked,
                                const at::Tensor& key_invalid, const at::Tensor& kept,
                                const at::Tensor& pair_invalid, const at::Tensor& pair_count,
                                const at::Tensor& over_heads, int64_t over_heads_all,
                                const at::Tensor& can_test, const at::Tensor& defer,
                                const at::Tensor& gamma, const at::Tensor& refresh_from,
                                const at::Tensor& deferred_from, int64_t layer,
                                int64_t num_layers) {
  const DecideDims d = check_decide_args(mass, heads_part, keys_part, still_masked, key_invalid,
                                         kept, pair_invalid, pair_count, over_heads, can_test,
                                         defer, gamma, refresh_from, deferred_from);
  // most-attended: masked keys score 0, keys past the sequence -1, then the twin's topk
  at::Tensor attended = at::empty({d.R, d.width}, mass.options().dtype(at::kLong));
  if (d.width > 0) {
    const at::Tensor m = mass.contiguous(), sm = still_masked.contiguous();
    const at::Tensor ki = key_invalid.contiguous();
    at::Tensor score = at::empty({d.R, d.N}, mass.options());
    const float* mp = m.data_ptr<float>();
    const bool *smp = sm.data_ptr<bool>(), *kip = ki.data_ptr<bool>();
    float* sp = score.data_ptr<float>();
    for (int64_t i = 0; i < d.R * d.N; ++i) sp[i] = kip[i] ? -1.f : (smp[i] ? 0.f : mp[i]);
    const at::Tensor top = std::get<1>(at::topk(score, d.width, -1)).contiguous();
    const at::Tensor kp = kept.contiguous();
    const int64_t* tp = top.data_ptr<int64_t>();
    const bool* keep = kp.data_ptr<bool>();
    int64_t* out = attended.data_ptr<int64_t>();
    for (int64_t i = 0; i < d.R * d.width; ++i) out[i] = keep[i] ? tp[i] : -1;
  }
  at::Tensor similarity = at::full({d.R}, std::numeric_limits<double>::quiet_NaN(),
                                   gamma.options());
  at::Tensor refresh = refresh_from.clone(), deferred = deferred_from.clone();
  if (d.K == 0) return {attended, similarity, refresh, deferred};

  const at::Tensor hp = heads_part.contiguous(), kp = keys_part.contiguous();
  const at::Tensor pi = pair_invalid.contiguous(), pc = pair_count.contiguous();
  const at::Tensor oh = over_heads.contiguous(), ct = can_test.contiguous();
  const at::Tensor df = defer.contiguous(), g = gamma.contiguous();
  const int64_t pairs = d.K * d.N, plane = d.R * pairs;
  const float *heads = hp.data_ptr<float>(), *keys = kp.data_ptr<float>();
  double* sim = similarity.data_ptr<double>();
  int64_t *rf = refresh.data_ptr<int64_t>(), *dfrom = deferred.data_ptr<int64_t>();
  for (int64_t r = 0; r < d.R; ++r) {
    const bool testing =
        ct.data_ptr<bool>()[r] && layer < rf[r] && dfrom[r] == num_layers;
    if (!testing) continue;
    const bool by_heads = over_heads_all < 0 ? oh.data_ptr<bool>()[r] : over_heads_all == 1;
    if (by_heads) {
      const float* ab = heads + r * pairs;
      const int64_t count = std::max<int64_t>(pc.data_ptr<int64_t>()[r], 1);
      sim[r] = head_cosine(ab, ab + plane, ab + 2 * plane, pi.data_ptr<bool>() + r * pairs,
                           pairs, count);
    } else {
      sim[r] = static_cast<double>(keys[r]) /
               std::max(static_cast<double>(keys[d.R + r]), 1.0);
    }
    if (!(sim[r] < g.data_ptr<double>()[r])) continue;
    if (df.data_ptr<bool>()[r]) {
      dfrom[r] = layer + 1;
    } else {
      rf[r] = layer + 1;
    }
  }
  return {attended, similarity, refresh, deferred};
}

DecideResult elastic_decide_meta(const at::Tensor& mass, const at::Tensor& heads_part,
                                 const at::Tensor& keys_part, const at::Tensor& still_masked,
                                 const at::Tensor& key_invalid, const at::Tensor& kept,
                                 const at::Tensor& pair_invalid, const at::Tensor& pair_count,
                                 const at::Tensor& over_heads, int64_t over_heads_all,
                                 const at::Tensor& can_test, const at::Tensor& defer,
                                 const at::Tensor& gamma, const at::Tensor& refresh_from,
                                 const at::Tensor& deferred_from, int64_t layer,
                                 int64_t num_layers) {
  const int64_t R = mass.size(0);
  return {at::empty({R, kept.size(1)}, mass.options().dtype(at::kLong)),
          at::empty({R}, gamma.options()), at::empty_like(refresh_from),
          at::empty_like(deferred_from)};
}

}  // namespace vllm_elastic
