// CUDA implementation of torch.ops.vllm_elastic.elastic_attention and elastic_attention_varlen
// (the one-sequence op is the batch of one): prepares the small index tensors with ATen on the
// current stream and launches the kernels of
// elastic_attention_cuda_kernels.cuh (pass 1: output and softmax statistics; pass 2: mass, drift).
// Index values (rows distinct and in range, block ids, window / tracked) are not checked on the
// GPU (a check would synchronise the stream): the CPU kernel checks them; out-of-range values here
// are undefined behaviour.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "elastic_attention.h"
#include "elastic_attention_cuda_kernels.cuh"

namespace vllm_elastic {
namespace {

namespace ek = vllm_elastic_cuda;

constexpr int kPass1Warps = 4;  // warps per (row, head) block: they split the keys
constexpr int kPass2Warps = 8;  // keys per pass-2 block (one warp each)
constexpr float kNormEps = 1e-8f;

// at:: scalar types -> the CUDA types the kernels take (same bit layout).
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

// The device tensors of one call in the kernels' layout: every per-sequence tensor has R rows (the
// one-sequence op is the batch of one).
struct Launch {
  int64_t T, H, Hkv, dh, R, W, K, max_len;
  at::Tensor q, k_new, v_new, key_cache, value_cache;  // contiguous (caches: dh contiguous)
  at::Tensor block_tables;                             // int64 [R, max_blocks]
  at::Tensor pos_row;      // int32 [R, max_len]: packed row of (sequence, position), or -1
  at::Tensor seq_lens;     // int64 [R]
  at::Tensor reads_cache;  // bool [R], or undefined: every sequence reads its cache
  at::Tensor row_seq;      // int64 [T], or undefined: R = 1
  at::Tensor window;       // int64 [R, W] (-1: absent)
  at::Tensor tracked;      // int64 [R, K]
  at::Tensor prev_q;       // [R * K, H, dh], or undefined when K = 0
};

// Outputs: o [T, H, dh]; mass [R, max_len] (zeroed); heads [3, R, K, max_len] (zeroed) or
// undefined; part [R, H, K, 3] (zeroed) or undefined.
struct Outputs {
  at::Tensor o, mass, heads, part;
};

template <typename scalar_t>
void launch(const Launch& c, Outputs& out) {
  using T = typename CudaType<scalar_t>::type;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const ek::KVSource<T> kv{ptr<T>(c.key_cache),
                           ptr<T>(c.value_cache),
                           c.key_cache.stride(0),
                           c.key_cache.stride(1),
                           c.key_cache.stride(2),
                           c.value_cache.stride(0),
                           c.value_cache.stride(1),
                           c.value_cache.stride(2),
                           ptr<int64_t>(c.block_tables),
                           c.block_tables.size(1),
                           std::max<int64_t>(c.key_cache.size(2), 1),
                           ptr<T>(c.k_new),
                           ptr<T>(c.v_new),
                           ptr<int32_t>(c.pos_row),
                           ptr<int64_t>(c.seq_lens),
                           ptr<bool>(c.reads_cache),
                           c.max_len,
                           static_cast<int>(c.Hkv),
                           static_cast<int>(c.dh)};
  const ek::Dims dm{static_cast<int>(c.T),
                    static_cast<int>(c.H),
                    static_cast<int>(c.Hkv),
                    static_cast<int>(c.H / c.Hkv),
                    static_cast<int>(c.dh),
                    static_cast<int>(c.W),
                    static_cast<int>(c.K),
                    static_cast<int>(c.R),
                    c.max_len,
                    static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.dh)))};
  const auto f32 = c.q.options().dtype(at::kFloat);
  at::Tensor m_now = at::empty({c.T * c.H}, f32), l_now = at::empty({c.T * c.H}, f32);
  at::Tensor m_prev = at::empty({c.R * c.K * c.H}, f32), l_prev = at::empty_like(m_prev);
  const dim3 block1(kPass1Warps * ek::kWarpSize);
  if (c.T > 0) {
    const ek::RowSeq rows{ptr<int64_t>(c.row_seq), static_cast<int>(c.T), nullptr};
    ek::pass1_kernel<T, kPass1Warps><<<dim3(c.T, c.H), block1, 0, stream>>>(
        kv, dm, ptr<T>(c.q), rows, true, ptr<T>(out.o), ptr<float>(m_now), ptr<float>(l_now));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (c.R * c.K > 0) {
    const ek::RowSeq slots{nullptr, static_cast<int>(c.K), ptr<int64_t>(c.tracked)};
    ek::pass1_kernel<T, kPass1Warps><<<dim3(c.R * c.K, c.H), block1, 0, stream>>>(
        kv, dm, ptr<T>(c.prev_q), slots, false, nullptr, ptr<float>(m_prev), ptr<float>(l_prev));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (c.W == 0 && c.K == 0) return;  // mass stays zero
  const ek::Pass2Args a{ptr<int64_t>(c.window), ptr<int64_t>(c.tracked), ptr<float>(m_now),
                        ptr<float>(l_now),      ptr<float>(m_prev),      ptr<float>(l_prev),
                        ptr<float>(out.mass),   ptr<float>(out.heads),   ptr<float>(out.part)};
  const int64_t blocks = (c.R * c.max_len + kPass2Warps - 1) / kPass2Warps;
  if (blocks > 0) {
    ek::pass2_kernel<T, kPass2Warps><<<blocks, kPass2Warps * ek::kWarpSize, 0, stream>>>(
        kv, dm, ptr<T>(c.q), ptr<T>(c.prev_q), a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// Key mode: the cosine of every (sequence, head, tracked row) from part [R, H, K, 3] =
// (a.b, a.a, b.b): [R, H, K] (0 for absent rows, whose sums are 0).
at::Tensor key_mode_cosines(const at::Tensor& part) {
  const at::Tensor norms =
      part.select(-1, 1).sqrt().clamp_min(kNormEps) * part.select(-1, 2).sqrt().clamp_min(kNormEps);
  return part.select(-1, 0) / norms;
}

void check_cuda_sizes(const at::Tensor& q, int64_t dh, int64_t max_len, int64_t T, int64_t H) {
  TORCH_CHECK_VALUE(q.is_cuda(), "the CUDA kernel needs q on a CUDA device");
  TORCH_CHECK_VALUE(dh <= ek::kMaxDh, "head size ", dh, " exceeds the CUDA kernel's ", ek::kMaxDh);
  TORCH_CHECK_VALUE(max_len < (int64_t{1} << 31) && T * H < (int64_t{1} << 31),
                    "n and T * H must fit int32");
}

}  // namespace

AttnResult elastic_attention_cuda(const at::Tensor& q, const at::Tensor& k_new,
                                  const at::Tensor& v_new, const at::Tensor& rows,
                                  const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& block_table, int64_t n,
                                  const at::Tensor& window, const at::Tensor& tracked,
                                  const at::Tensor& prev_q, bool cosine_over_heads) {
  const AttnDims d = check_args(q, k_new, v_new, rows, key_cache, value_cache, block_table, n,
                                window, tracked, prev_q);
  check_cuda_sizes(q, d.dh, n, d.T, d.H);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto dev = q.device();
  const auto i64 = q.options().dtype(at::kLong);
  const int64_t K = d.drift ? d.R : 0;
  Launch c{d.T, d.H, d.Hkv, d.dh, 1, d.W, K, n};
  c.q = q.contiguous();
  c.k_new = k_new.contiguous();
  c.v_new = v_new.contiguous();
  c.key_cache = dh_contiguous(key_cache);
  c.value_cache = dh_contiguous(value_cache);
  c.block_tables = block_table.to(dev, at::kLong).contiguous().view({1, -1});
  c.pos_row = at::full({1, n}, -1, q.options().dtype(at::kInt));
  if (d.T > 0) {
    c.pos_row.index_put_({at::zeros({d.T}, i64), rows.to(dev, at::kLong)},
                         at::arange(d.T, c.pos_row.options()));
  }
  c.seq_lens = at::full({1}, n, i64);
  c.window = window.to(dev, at::kLong).contiguous().view({1, d.W});
  c.tracked = tracked.to(dev, at::kLong).contiguous().view({1, d.R}).slice(1, 0, K).contiguous();
  if (K > 0) c.prev_q = prev_q.contiguous();
  const auto f32 = q.options().dtype(at::kFloat);
  Outputs out{at::empty({d.T, d.H, d.dh}, q.options()), at::zeros({1, n}, f32)};
  if (K > 0 && cosine_over_heads) out.heads = at::zeros({3, 1, K, n}, f32);
  if (K > 0 && !cosine_over_heads) out.part = at::zeros({1, d.H, K, 3}, f32);
  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_cuda", [&] { launch<scalar_t>(c, out); });
  at::Tensor drift = at::empty(drift_shape(d, cosine_over_heads), f32);
  if (K > 0 && cosine_over_heads) drift = out.heads.view({3, K, n});
  if (K > 0 && !cosine_over_heads) {
    drift.select(0, 0).copy_(key_mode_cosines(out.part).sum());
    drift.select(0, 1).fill_(static_cast<double>(d.H * K));
  }
  return {out.o, out.mass.view({n}), drift};
}

VarlenResult elastic_attention_varlen_cuda(const at::Tensor& q, const at::Tensor& k_new,
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
  check_cuda_sizes(q, d.dh, max_len, d.T, d.H);
  const c10::cuda::CUDAGuard guard(q.device());
  Launch c{d.T, d.H, d.Hkv, d.dh, d.R, d.W, d.K, max_len};
  c.q = q.contiguous();
  c.k_new = k_new.contiguous();
  c.v_new = v_new.contiguous();
  c.key_cache = dh_contiguous(key_cache);
  c.value_cache = dh_contiguous(value_cache);
  c.block_tables = block_tables.to(at::kLong).contiguous();
  c.row_seq = row_seq.to(at::kLong).contiguous();
  c.pos_row = at::full({d.R, max_len}, -1, q.options().dtype(at::kInt));
  if (d.T > 0) {
    c.pos_row.index_put_({c.row_seq, row_pos.to(at::kLong)}, at::arange(d.T, c.pos_row.options()));
  }
  c.seq_lens = seq_lens.to(at::kLong).contiguous();
  c.reads_cache = reads_cache.contiguous();
  c.window = window.to(at::kLong).contiguous();
  c.tracked = tracked.to(at::kLong).contiguous();
  if (d.K > 0) c.prev_q = prev_q.contiguous().view({d.R * d.K, d.H, d.dh});
  const auto f32 = q.options().dtype(at::kFloat);
  Outputs out{at::empty({d.T, d.H, d.dh}, q.options()), at::zeros({d.R, max_len}, f32),
              at::zeros({3, d.R, d.K, max_len}, f32), at::zeros({d.R, d.H, d.K, 3}, f32)};
  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_varlen_cuda",
                   [&] { launch<scalar_t>(c, out); });
  at::Tensor keys = at::stack({key_mode_cosines(out.part).sum({1, 2}),
                               (c.tracked >= 0).sum(1).to(at::kFloat) * static_cast<double>(d.H)});
  return {out.o, out.mass, out.heads, keys};
}

}  // namespace vllm_elastic

TORCH_LIBRARY_IMPL(vllm_elastic, CUDA, m) {
  m.impl("elastic_attention", &vllm_elastic::elastic_attention_cuda);
  m.impl("elastic_attention_varlen", &vllm_elastic::elastic_attention_varlen_cuda);
}
