// CPU kernel of elastic_attention_varlen (spec: vllm_elastic/core/elastic_attention.py,
// elastic_attention_varlen_ref): one SeqWork per sequence for the loops of
// elastic_attention_cpu_kernels.h, which run over (sequence, kv head, row tile) and (sequence, key
// chunk) items. Nothing of shape [R, H, rows, N] is made: pass 1 keeps an online softmax per
// (row, head), pass 2 recomputes the scores of the window / tracked rows one chunk of keys at a
// time.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <vector>

#include "elastic_attention.h"
#include "elastic_attention_cpu_run.h"

namespace vllm_elastic {
namespace {

at::Tensor host_long(const at::Tensor& t) { return t.to(at::kLong).contiguous(); }

// Outputs and host copies of one call, shared by every sequence's SeqWork.
struct VarlenHost {
  at::Tensor cu, lens, bt, win, trk, reads;  // int64 (reads: bool), contiguous
  std::vector<int32_t> pos_row;              // [R * max_len]
  at::Tensor mass, heads, keys;              // zeroed outputs
};

// Sequence s's part of the call: its keys, rows, present window / tracked rows and outputs.
template <typename scalar_t>
cpu::SeqWork<scalar_t> seq_work(const VarlenDims& d, const VarlenHost& h, int64_t s,
                                const cpu::KVSource<scalar_t>& kv_all, const scalar_t* zeros) {
  const int64_t* cu = h.cu.data_ptr<int64_t>();
  cpu::SeqWork<scalar_t> w;
  w.kv = kv_all;
  w.kv.block_table = h.bt.data_ptr<int64_t>() + s * d.max_blocks;
  w.kv.pos_row = h.pos_row.data() + s * d.max_len;
  w.kv.zeros = h.reads.data_ptr<bool>()[s] ? nullptr : zeros;  // no cache: zero K/V, as the twin
  w.n = h.lens.data_ptr<int64_t>()[s];
  w.row0 = cu[s];
  w.rows = cu[s + 1] - cu[s];
  w.mass = h.mass.data_ptr<float>() + s * d.max_len;
  const int64_t* win = h.win.data_ptr<int64_t>() + s * d.W;
  for (int64_t j = 0; j < d.W; ++j) {
    if (win[j] >= 0) w.window.push_back(win[j]);
  }
  const int64_t* trk = h.trk.data_ptr<int64_t>() + s * d.K;
  for (int64_t k = 0; k < d.K; ++k) {
    if (trk[k] < 0) continue;
    w.tracked.push_back(trk[k]);
    w.slots.push_back(k);
  }
  if (!w.tracked.empty()) {
    w.prev0 = s * d.K;
    w.prev_rows = w.slots.back() + 1;
    w.heads = h.heads.data_ptr<float>() + s * d.K * d.max_len;
    w.keys = h.keys.data_ptr<float>() + s;
  }
  return w;
}

}  // namespace

VarlenResult elastic_attention_varlen_cpu(const at::Tensor& q, const at::Tensor& k_new,
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
  TORCH_CHECK_VALUE(q.device().is_cpu(), "elastic_attention_varlen_cpu: q must be on the CPU");
  VarlenHost h;
  h.cu = host_long(cu_rows);
  h.lens = host_long(seq_lens);
  h.bt = host_long(block_tables);
  h.win = host_long(window);
  h.trk = host_long(tracked);
  h.reads = reads_cache.contiguous();
  h.pos_row = varlen_position_rows(d, host_long(row_seq), host_long(row_pos), h.cu, h.lens, h.bt,
                                   h.reads, h.win, h.trk);
  const auto f32 = q.options().dtype(at::kFloat);
  h.mass = at::zeros({d.R, d.max_len}, f32);
  h.heads = at::zeros({3, d.R, d.K, d.max_len}, f32);
  h.keys = at::zeros({2, d.R}, f32);

  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dh));
  const at::Tensor qs = q.to(at::kFloat).mul(scale).contiguous();
  const at::Tensor ps = prev_q.to(at::kFloat).mul(scale).contiguous();  // [R * K, H, dh]
  const at::Tensor kn = k_new.contiguous(), vn = v_new.contiguous();
  const at::Tensor kcache = dh_contiguous(key_cache), vcache = dh_contiguous(value_cache);
  at::Tensor o = at::empty({d.T, d.H, d.dh}, q.options());

  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_varlen_cpu", [&] {
    const std::vector<scalar_t> zeros(d.dh, static_cast<scalar_t>(0.f));
    const cpu::KVSource<scalar_t> kv_all{kcache.data_ptr<scalar_t>(),
                                         vcache.data_ptr<scalar_t>(),
                                         {kcache.stride(0), kcache.stride(1), kcache.stride(2)},
                                         {vcache.stride(0), vcache.stride(1), vcache.stride(2)},
                                         nullptr,
                                         d.block_size,
                                         kn.data_ptr<scalar_t>(),
                                         vn.data_ptr<scalar_t>(),
                                         nullptr,
                                         nullptr,
                                         d.Hkv,
                                         d.dh};
    cpu::Batch<scalar_t> b;
    b.H = d.H;
    b.Hkv = d.Hkv;
    b.G = d.H / d.Hkv;
    b.dh = d.dh;
    b.qs = qs.data_ptr<float>();
    b.ps = d.K > 0 ? ps.data_ptr<float>() : nullptr;
    b.hc = d.R * d.K * d.max_len;  // heads [3, R, K, max_len]
    b.hk = d.max_len;
    b.kr = d.R;  // keys [2, R]
    for (int64_t s = 0; s < d.R; ++s) b.seqs.push_back(seq_work(d, h, s, kv_all, zeros.data()));
    cpu::run(b, d.T, d.R * d.K, o.data_ptr<scalar_t>());
  });
  return {o, h.mass, h.heads, h.keys};
}

}  // namespace vllm_elastic
