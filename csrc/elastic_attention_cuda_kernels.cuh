// CUDA kernels of the fused Elastic-Cache attention (semantics: core/elastic_attention.py), for a
// batch of R sequences with packed query rows (elastic_attention_varlen; the one-sequence
// elastic_attention is the batch of one). Torch-free on purpose: elastic_attention_cuda.cu
// launches them. T is float, __half or __nv_bfloat16; all arithmetic is float32.
//
// pass1_kernel: one block per (query row, head), NW warps; the row finds its sequence (RowSeq) and
//   reads that sequence's keys; warp w takes keys w, w + NW, ...; the lanes split dh (lane holds
//   dims lane + 32 i) and reduce each score with shuffles; each warp keeps an online softmax
//   (m, l, acc) that the block merges at the end. Writes o and (m, l) per (row, head).
// pass2_kernel: one warp per (sequence, key); recomputes the sequence's window / tracked rows'
//   scores of its key over all heads, normalises them with pass 1's (m, l), writes mass[s, key]
//   and the head-mode drift columns of its key (no races), and adds key-mode partial sums to
//   part[R, H, K, 3] with atomicAdd.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace vllm_elastic_cuda {

constexpr int kWarpSize = 32;
constexpr int kMaxDimsPerLane = 8;  // dh <= 256
constexpr int kMaxDh = kWarpSize * kMaxDimsPerLane;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int off = kWarpSize / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Read where a sequence does not read its cache (the twin's zero K/V); dh <= kMaxDh, and every
// kernel dtype's zero is all-zero bits.
__device__ float kZeroVector[kMaxDh] = {};

// Sizes of one call; scale = 1 / sqrt(dh). W / K: window / tracked slots per sequence.
struct Dims {
  int T, H, Hkv, G, dh, W, K, R;
  int64_t max_len;
  float scale;
};

// Where the keys/values of (sequence s, position p, kv head g) live; dh is contiguous.
template <typename T>
struct KVSource {
  const T* k_cache;
  const T* v_cache;
  int64_t ks0, ks1, ks2;  // key_cache strides of (block, kv head, token), in elements
  int64_t vs0, vs1, vs2;
  const int64_t* block_tables;  // [R, max_blocks]
  int64_t max_blocks, block_size;
  const T* k_new;  // [T, Hkv, dh] contiguous: this step's packed rows
  const T* v_new;
  const int32_t* pos_row;   // [R, max_len]: packed row of (s, p) in k_new, or -1
  const int64_t* seq_lens;  // [R]
  const bool* reads_cache;  // [R], or null: every sequence reads its cache
  int64_t max_len;
  int Hkv, dh;

  __device__ const T* key(int s, int64_t p, int g, bool current) const {
    const int r = pos_row[s * max_len + p];
    if (current && r >= 0) return k_new + (static_cast<int64_t>(r) * Hkv + g) * dh;
    if (reads_cache != nullptr && !reads_cache[s]) return reinterpret_cast<const T*>(kZeroVector);
    const int64_t b = block_tables[s * max_blocks + p / block_size];
    return k_cache + b * ks0 + g * ks1 + (p % block_size) * ks2;
  }
  __device__ const T* value(int s, int64_t p, int g) const {
    const int r = pos_row[s * max_len + p];
    if (r >= 0) return v_new + (static_cast<int64_t>(r) * Hkv + g) * dh;
    if (reads_cache != nullptr && !reads_cache[s]) return reinterpret_cast<const T*>(kZeroVector);
    const int64_t b = block_tables[s * max_blocks + p / block_size];
    return v_cache + b * vs0 + g * vs1 + (p % block_size) * vs2;
  }
};

// The sequence of a pass-1 query row: row_seq[row] for the packed rows, row / per_seq for the
// [R * K] rows of prev_q; a row whose present entry is negative (absent tracked row) is skipped.
struct RowSeq {
  const int64_t* row_seq;  // [rows] or null
  int per_seq;
  const int64_t* present;  // [rows] or null: every row is computed

  __device__ int operator()(int row) const {
    return row_seq != nullptr ? static_cast<int>(row_seq[row]) : row / per_seq;
  }
};

// The lane's dims of a dh-vector, in float (0 beyond dh).
template <typename T>
__device__ __forceinline__ void load_lane(const T* src, int dh, int lane, float* dst, float mul) {
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int d = lane + i * kWarpSize;
    dst[i] = d < dh ? to_float(src[d]) * mul : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float lane_dot(const float* qv, const T* k, int dh, int lane) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int d = lane + i * kWarpSize;
    if (d < dh) s += qv[i] * to_float(k[d]);
  }
  return warp_sum(s);
}

// Full dot product of two lane-split vectors (registers), in every lane.
__device__ __forceinline__ float reg_dot(const float* a, const float* b) {
  float t = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) t += a[i] * b[i];
  return warp_sum(t);
}

// q: [rows, H, dh]; grid (rows, H). current = keys of this step, else the cache as passed (old
// keys). out ([rows, H, dh]) may be null: then only (m, l) ([rows, H]) are written.
template <typename T, int NW>
__global__ void pass1_kernel(KVSource<T> kv, Dims dm, const T* q, RowSeq rs, bool current, T* out,
                             float* m_out, float* l_out) {
  __shared__ float sm[NW], sl[NW], so[NW][kMaxDh];
  const int row = blockIdx.x, h = blockIdx.y, g = h / dm.G;
  if (rs.present != nullptr && rs.present[row] < 0) return;  // the whole block: no sync skipped
  const int s = rs(row);
  const int64_t n = kv.seq_lens[s];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t qi = static_cast<int64_t>(row) * dm.H + h;
  float qv[kMaxDimsPerLane], acc[kMaxDimsPerLane];
  load_lane(q + qi * dm.dh, dm.dh, lane, qv, dm.scale);
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int64_t p = warp; p < n; p += NW) {
    const float sc = lane_dot(qv, kv.key(s, p, g, current), dm.dh, lane);
    const float m_new = fmaxf(m, sc);
    const float corr = expf(m - m_new), pj = expf(sc - m_new);  // corr = 0 on the warp's first key
    l = l * corr + pj;
    m = m_new;
    if (out == nullptr) continue;
    const T* v = kv.value(s, p, g);
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      const int d = lane + i * kWarpSize;
      if (d < dm.dh) acc[i] = acc[i] * corr + pj * to_float(v[d]);
    }
  }
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) so[warp][lane + i * kWarpSize] = acc[i];
  __syncthreads();
  float mmax = -INFINITY;
  for (int w = 0; w < NW; ++w) mmax = fmaxf(mmax, sm[w]);
  float lsum = 0.f;  // warps without keys have m = -inf: weight 0
  for (int w = 0; w < NW; ++w) lsum += sm[w] == -INFINITY ? 0.f : sl[w] * expf(sm[w] - mmax);
  if (threadIdx.x == 0) {
    m_out[qi] = mmax;
    l_out[qi] = lsum;
  }
  if (out == nullptr) return;
  for (int d = threadIdx.x; d < dm.dh; d += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < NW; ++w) o += sm[w] == -INFINITY ? 0.f : so[w][d] * expf(sm[w] - mmax);
    out[qi * dm.dh + d] = from_float<T>(o / lsum);
  }
}

// What pass 2 reads besides the keys.
struct Pass2Args {
  const int64_t* window;   // [R, W] packed rows (-1: absent)
  const int64_t* tracked;  // [R, K]
  const float* m_now;      // [T, H] final softmax max / sum of every query row
  const float* l_now;
  const float* m_prev;  // [R * K, H] of prev_q over the old keys
  const float* l_prev;
  float* mass;   // [R, max_len]
  float* heads;  // head-mode drift [3, R, K, max_len] (zeroed), or null
  float* part;   // key-mode partial sums [R, H, K, 3] (zeroed), or null
};

// One warp per (sequence, key); grid ceil(R * max_len / NW). q: [T, H, dh]; prev_q: [R * K, H, dh]
// (or null when K = 0).
template <typename T, int NW>
__global__ void pass2_kernel(KVSource<T> kv, Dims dm, const T* q, const T* prev_q, Pass2Args a) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * NW + warp;
  const int s = static_cast<int>(item / dm.max_len);
  const int64_t p = item % dm.max_len;
  if (s >= dm.R || p >= kv.seq_lens[s]) return;
  float kc[kMaxDimsPerLane], pv[kMaxDimsPerLane], qv[kMaxDimsPerLane];
  const int64_t* window = a.window + static_cast<int64_t>(s) * dm.W;
  float mass = 0.f;
  for (int h = 0; h < dm.H && dm.W > 0; ++h) {
    load_lane(kv.key(s, p, h / dm.G, true), dm.dh, lane, kc, 1.f);
    for (int w = 0; w < dm.W; ++w) {
      if (window[w] < 0) continue;
      const int64_t qi = window[w] * dm.H + h;
      load_lane(q + qi * dm.dh, dm.dh, lane, qv, dm.scale);
      const float sc = reg_dot(qv, kc);
      mass += expf(sc - a.m_now[qi]) / a.l_now[qi];
    }
  }
  if (lane == 0) a.mass[s * dm.max_len + p] = mass;
  for (int k = 0; k < dm.K; ++k) {
    const int64_t slot = static_cast<int64_t>(s) * dm.K + k, row = a.tracked[slot];
    if (row < 0) continue;
    float ab = 0.f, aa = 0.f, bb = 0.f;
    for (int h = 0; h < dm.H; ++h) {
      const int g = h / dm.G;
      const int64_t qi = row * dm.H + h, pi = slot * dm.H + h;
      load_lane(q + qi * dm.dh, dm.dh, lane, qv, dm.scale);
      const float sb = lane_dot(qv, kv.key(s, p, g, true), dm.dh, lane);
      load_lane(prev_q + pi * dm.dh, dm.dh, lane, pv, dm.scale);
      const float sa = lane_dot(pv, kv.key(s, p, g, false), dm.dh, lane);
      const float b = expf(sb - a.m_now[qi]) / a.l_now[qi];
      const float pa = expf(sa - a.m_prev[pi]) / a.l_prev[pi];
      ab += pa * b;
      aa += pa * pa;
      bb += b * b;
      if (a.part != nullptr && lane == 0) {
        float* dst = a.part + ((static_cast<int64_t>(s) * dm.H + h) * dm.K + k) * 3;
        atomicAdd(dst + 0, pa * b);
        atomicAdd(dst + 1, pa * pa);
        atomicAdd(dst + 2, b * b);
      }
    }
    if (a.heads != nullptr && lane == 0) {
      const int64_t plane = static_cast<int64_t>(dm.R) * dm.K * dm.max_len;
      float* dst = a.heads + slot * dm.max_len + p;
      dst[0] = ab;
      dst[plane] = aa;
      dst[2 * plane] = bb;
    }
  }
}

}  // namespace vllm_elastic_cuda
