// CPU kernel of the one-sequence elastic_attention (spec: vllm_elastic/core/elastic_attention.py):
// the batch of one sequence of the loops in elastic_attention_cpu_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "elastic_attention.h"
#include "elastic_attention_cpu_run.h"

namespace vllm_elastic {

AttnResult elastic_attention_cpu(const at::Tensor& q, const at::Tensor& k_new,
                                 const at::Tensor& v_new, const at::Tensor& rows,
                                 const at::Tensor& key_cache, const at::Tensor& value_cache,
                                 const at::Tensor& block_table, int64_t n, const at::Tensor& window,
                                 const at::Tensor& tracked, const at::Tensor& prev_q,
                                 bool cosine_over_heads) {
  const AttnDims d = check_args(q, k_new, v_new, rows, key_cache, value_cache, block_table, n,
                                window, tracked, prev_q);
  TORCH_CHECK_VALUE(q.device().is_cpu(), "elastic_attention_cpu: q must be on the CPU");
  const at::Tensor rows64 = rows.to(at::kLong).contiguous();
  const at::Tensor win64 = window.to(at::kLong).contiguous();
  const at::Tensor trk64 = tracked.to(at::kLong).contiguous();
  check_range(win64, d.T, "window", "T");
  check_range(trk64, d.T, "tracked", "T");
  const std::vector<int32_t> pos_row = position_rows(rows64, n);

  // The cache is read only for positions that rows does not cover, and for the drift's old keys.
  const bool needs_cache = d.T < n || d.drift;
  const at::Tensor kcache = dh_contiguous(key_cache), vcache = dh_contiguous(value_cache);
  at::Tensor bt64 = block_table.to(at::kLong).contiguous();
  if (needs_cache) {
    TORCH_CHECK_VALUE(d.block_size > 0 && d.num_blocks > 0, "the caches are read but have shape ",
                      key_cache.sizes());
    const int64_t used = (n + d.block_size - 1) / d.block_size;
    TORCH_CHECK_VALUE(bt64.numel() >= used, "block_table has ", bt64.numel(), " entries but n=", n,
                      " with block_size ", d.block_size, " needs ", used);
    check_range(bt64.slice(0, 0, used), d.num_blocks, "block_table", "num_blocks");
  }

  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dh));
  const at::Tensor qs = q.to(at::kFloat).mul(scale).contiguous();
  const at::Tensor ps = d.drift ? prev_q.to(at::kFloat).mul(scale).contiguous() : at::Tensor();
  const at::Tensor kn = k_new.contiguous(), vn = v_new.contiguous();
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor o = at::empty({d.T, d.H, d.dh}, q.options());
  at::Tensor mass = at::zeros({n}, f32);
  at::Tensor drift = at::zeros(drift_shape(d, cosine_over_heads), f32);

  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_cpu", [&] {
    cpu::SeqWork<scalar_t> s;
    s.kv = {kcache.data_ptr<scalar_t>(),
            vcache.data_ptr<scalar_t>(),
            {kcache.stride(0), kcache.stride(1), kcache.stride(2)},
            {vcache.stride(0), vcache.stride(1), vcache.stride(2)},
            bt64.data_ptr<int64_t>(),
            d.block_size,
            kn.data_ptr<scalar_t>(),
            vn.data_ptr<scalar_t>(),
            pos_row.data(),
            /*zeros=*/nullptr,
            d.Hkv,
            d.dh};
    s.n = n;
    s.rows = d.T;
    s.window.assign(win64.data_ptr<int64_t>(), win64.data_ptr<int64_t>() + d.W);
    if (d.drift) {
      s.tracked.assign(trk64.data_ptr<int64_t>(), trk64.data_ptr<int64_t>() + d.R);
      s.slots.resize(d.R);
      std::iota(s.slots.begin(), s.slots.end(), int64_t{0});
      s.prev_rows = d.R;
      (cosine_over_heads ? s.heads : s.keys) = drift.data_ptr<float>();
    }
    s.mass = mass.data_ptr<float>();
    cpu::Batch<scalar_t> b;
    b.H = d.H;
    b.Hkv = d.Hkv;
    b.G = d.H / d.Hkv;
    b.dh = d.dh;
    b.qs = qs.data_ptr<float>();
    b.ps = d.drift ? ps.data_ptr<float>() : nullptr;
    b.hc = d.R * n;  // head mode [3, R, n]
    b.hk = n;
    b.kr = 1;  // key mode [2]
    b.seqs.push_back(std::move(s));
    cpu::run(b, d.T, d.drift ? d.R : 0, o.data_ptr<scalar_t>());
  });
  return {o, mass, drift};
}

}  // namespace vllm_elastic
