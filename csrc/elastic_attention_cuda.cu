// CUDA implementation of torch.ops.vllm_elastic.elastic_attention: prepares the small index
// tensors with ATen on the current stream and launches the kernels of
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

// Key mode: drift = (sum over (h, r) of cos_hr, H * R) from part[H * R, 3] = (a.b, a.a, b.b).
void finish_key_mode(const at::Tensor& part, const AttnDims& d, at::Tensor& drift) {
  const at::Tensor p = part.view({d.H * d.R, 3});
  const at::Tensor norms =
      p.select(1, 1).sqrt().clamp_min(kNormEps) * p.select(1, 2).sqrt().clamp_min(kNormEps);
  drift.select(0, 0).copy_((p.select(1, 0) / norms).sum());
  drift.select(0, 1).fill_(static_cast<double>(d.H * d.R));
}

template <typename scalar_t>
void launch(const AttnDims& d, bool head_mode, const at::Tensor& q, const at::Tensor& kn,
            const at::Tensor& vn, const at::Tensor& kcache, const at::Tensor& vcache,
            const at::Tensor& bt64, const at::Tensor& pos_row, const at::Tensor& win64,
            const at::Tensor& trk64, const at::Tensor& pq, at::Tensor& o, at::Tensor& mass,
            at::Tensor& drift) {
  using T = typename CudaType<scalar_t>::type;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  ek::KVSource<T> kv{ptr<T>(kcache),
                     ptr<T>(vcache),
                     kcache.stride(0),
                     kcache.stride(1),
                     kcache.stride(2),
                     vcache.stride(0),
                     vcache.stride(1),
                     vcache.stride(2),
                     ptr<int64_t>(bt64),
                     d.block_size,
                     ptr<T>(kn),
                     ptr<T>(vn),
                     ptr<int32_t>(pos_row),
                     static_cast<int>(d.Hkv),
                     static_cast<int>(d.dh)};
  const ek::Dims dm{static_cast<int>(d.T),
                    static_cast<int>(d.H),
                    static_cast<int>(d.Hkv),
                    static_cast<int>(d.H / d.Hkv),
                    static_cast<int>(d.dh),
                    static_cast<int>(d.n),
                    static_cast<int>(d.W),
                    static_cast<int>(d.R),
                    static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.dh)))};
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor m_now = at::empty({d.T * d.H}, f32), l_now = at::empty({d.T * d.H}, f32);
  at::Tensor m_prev = at::empty({d.R * d.H}, f32), l_prev = at::empty({d.R * d.H}, f32);
  const dim3 block1(kPass1Warps * ek::kWarpSize);
  if (d.T > 0) {
    ek::pass1_kernel<T, kPass1Warps><<<dim3(d.T, d.H), block1, 0, stream>>>(
        kv, dm, ptr<T>(q), true, ptr<T>(o), ptr<float>(m_now), ptr<float>(l_now));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (d.drift) {
    ek::pass1_kernel<T, kPass1Warps><<<dim3(d.R, d.H), block1, 0, stream>>>(
        kv, dm, ptr<T>(pq), false, nullptr, ptr<float>(m_prev), ptr<float>(l_prev));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (d.W == 0 && !d.drift) {
    mass.zero_();
    return;
  }
  at::Tensor part = d.drift && !head_mode ? at::zeros({d.H * d.R * 3}, f32) : at::Tensor();
  const ek::Pass2Args a{ptr<int64_t>(win64),
                        ptr<int64_t>(trk64),
                        ptr<float>(m_now),
                        ptr<float>(l_now),
                        ptr<float>(m_prev),
                        ptr<float>(l_prev),
                        d.drift,
                        head_mode,
                        ptr<float>(mass),
                        head_mode ? ptr<float>(drift) : nullptr,
                        part.defined() ? ptr<float>(part) : nullptr};
  const int blocks = static_cast<int>((d.n + kPass2Warps - 1) / kPass2Warps);
  if (blocks > 0) {
    ek::pass2_kernel<T, kPass2Warps>
        <<<blocks, kPass2Warps * ek::kWarpSize, 0, stream>>>(kv, dm, ptr<T>(q), ptr<T>(pq), a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (part.defined()) finish_key_mode(part, d, drift);
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
  TORCH_CHECK_VALUE(q.is_cuda(), "elastic_attention_cuda: q must be on a CUDA device");
  TORCH_CHECK_VALUE(d.dh <= ek::kMaxDh, "head size ", d.dh, " exceeds the CUDA kernel's ",
                    ek::kMaxDh);
  TORCH_CHECK_VALUE(n < (int64_t{1} << 31) && d.T * d.H < (int64_t{1} << 31),
                    "n and T * H must fit int32");
  const c10::cuda::CUDAGuard guard(q.device());
  const auto dev = q.device();
  const at::Tensor rows64 = rows.to(dev, at::kLong).contiguous();
  const at::Tensor win64 = window.to(dev, at::kLong).contiguous();
  const at::Tensor trk64 = tracked.to(dev, at::kLong).contiguous();
  const at::Tensor bt64 = block_table.to(dev, at::kLong).contiguous();
  // pos_row[p] = the row of position p in k_new / v_new, or -1 (read the cache).
  at::Tensor pos_row = at::full({n}, -1, q.options().dtype(at::kInt));
  if (d.T > 0) pos_row.index_put_({rows64}, at::arange(d.T, pos_row.options()));
  const at::Tensor qc = q.contiguous(), kn = k_new.contiguous(), vn = v_new.contiguous();
  const at::Tensor pq = d.drift ? prev_q.contiguous() : at::Tensor();
  const at::Tensor kcache = dh_contiguous(key_cache), vcache = dh_contiguous(value_cache);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor o = at::empty({d.T, d.H, d.dh}, q.options());
  at::Tensor mass = at::empty({n}, f32);
  at::Tensor drift = at::empty(drift_shape(d, cosine_over_heads), f32);
  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_cuda", [&] {
    launch<scalar_t>(d, cosine_over_heads, qc, kn, vn, kcache, vcache, bt64, pos_row, win64, trk64,
                     pq, o, mass, drift);
  });
  return {o, mass, drift};
}

}  // namespace vllm_elastic

TORCH_LIBRARY_IMPL(vllm_elastic, CUDA, m) {
  m.impl("elastic_attention", &vllm_elastic::elastic_attention_cuda);
}
