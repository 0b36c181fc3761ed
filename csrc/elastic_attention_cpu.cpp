// CPU kernel of the fused Elastic-Cache attention (spec: vllm_elastic/core/elastic_attention.py).
//
// Pass 1 (output): flash-attention style. A work item is (kv head g, tile of rows): as few tiles as
// keep every thread busy (kItemsPerThread items each), since a tile pays one K/V gather per chunk;
// it gathers each chunk of kKeyChunk keys/values once (converted to float, keys transposed to
// [dh][kKeyChunk] so that the score loop runs over contiguous keys and vectorises without
// reassociation), then updates an online softmax (max m, sum l, output acc) for every
// (row, query head of the group). The same routine gives (m, l) of prev_q over the old keys.
// Pass 2 (statistics): a work item is one chunk of keys; it recomputes the scores of the window and
// tracked rows over its keys, normalises them with the final (m, l) and owns mass / head-mode drift
// of its keys, so there are no races; key-mode partial sums go to a per-chunk buffer reduced at the
// end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "elastic_attention.h"

namespace vllm_elastic {
namespace {

constexpr int64_t kKeyChunk = 32;  // keys per chunk: one query's scores fit 4 AVX2 registers
// Pass-1 work items per thread: enough for balance, few so that a K/V chunk is gathered once for
// many rows.
constexpr int64_t kItemsPerThread = 4;
// Output dims kept in registers while a chunk's values are summed.
constexpr int64_t kDimBlock = 32;
constexpr float kNormEps = 1e-8f;  // key-mode cosine: norms are clamped to at least this
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Where the keys/values of (position p, kv head g) live. dh is contiguous (stride 1).
template <typename scalar_t>
struct KVSource {
  const scalar_t* k_cache;
  const scalar_t* v_cache;
  int64_t ks[3];  // key_cache strides of (block, kv head, token), in elements
  int64_t vs[3];  // value_cache strides
  const int64_t* block_table;
  int64_t block_size;
  const scalar_t* k_new;  // [T, Hkv, dh] contiguous
  const scalar_t* v_new;
  const int32_t* pos_row;  // [n]: row of p in k_new, or -1 (read the cache)
  int64_t Hkv, dh;

  // current = the keys of this step (k_new where overridden); otherwise the cache as passed.
  const scalar_t* key(int64_t p, int64_t g, bool current) const {
    if (current && pos_row[p] >= 0) return k_new + (pos_row[p] * Hkv + g) * dh;
    const int64_t b = block_table[p / block_size];
    return k_cache + b * ks[0] + g * ks[1] + (p % block_size) * ks[2];
  }
  const scalar_t* value(int64_t p, int64_t g) const {
    if (pos_row[p] >= 0) return v_new + (pos_row[p] * Hkv + g) * dh;
    const int64_t b = block_table[p / block_size];
    return v_cache + b * vs[0] + g * vs[1] + (p % block_size) * vs[2];
  }
};

// exp(x) for x <= 0 (scores minus their running max), branch-free so that loops over keys
// vectorise (std::exp does not without -ffast-math): Cody-Waite range reduction to
// r in [-ln2/2, ln2/2] and Cephes' degree-6 polynomial; relative error ~1e-7. x < -87 gives ~1e-38.
inline float exp_nonpos(float x) {
  x = std::max(x, -87.0f);
  constexpr float kRound =
      12582912.f;  // 1.5 * 2^23: adding it rounds to an integer (no floor call)
  const float k = (x * 1.44269504f + kRound) - kRound;  // round(x / ln2)
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// kt: [dh][kKeyChunk] float, keys p0..p0+kc of kv head g; columns >= kc are zero.
template <typename scalar_t>
void gather_keys(const KVSource<scalar_t>& kv, bool current, int64_t p0, int64_t kc, int64_t g,
                 float* kt) {
  std::fill(kt, kt + kv.dh * kKeyChunk, 0.f);
  for (int64_t j = 0; j < kc; ++j) {
    const scalar_t* src = kv.key(p0 + j, g, current);
    for (int64_t d = 0; d < kv.dh; ++d) kt[d * kKeyChunk + j] = static_cast<float>(src[d]);
  }
}

// vb: [kc][dh] float, values p0..p0+kc of kv head g (current values).
template <typename scalar_t>
void gather_values(const KVSource<scalar_t>& kv, int64_t p0, int64_t kc, int64_t g, float* vb) {
  for (int64_t j = 0; j < kc; ++j) {
    const scalar_t* src = kv.value(p0 + j, g);
    for (int64_t d = 0; d < kv.dh; ++d) vb[j * kv.dh + d] = static_cast<float>(src[d]);
  }
}

// s[i][j] = q_i . key j for NQ queries and the kKeyChunk keys of kt (queries pre-scaled by
// 1/sqrt(dh)); keys j >= kc get -inf. NQ queries share each load of a kt row.
template <int NQ>
inline void chunk_scores(const float* const* q, const float* kt, int64_t dh, int64_t kc,
                         float (*s)[kKeyChunk]) {
  float acc[NQ][kKeyChunk] = {};
  for (int64_t d = 0; d < dh; ++d) {
    const float* row = kt + d * kKeyChunk;
    for (int i = 0; i < NQ; ++i) {
      const float qd = q[i][d];
      for (int64_t j = 0; j < kKeyChunk; ++j) acc[i][j] += qd * row[j];
    }
  }
  for (int i = 0; i < NQ; ++i) {
    for (int64_t j = 0; j < kKeyChunk; ++j) s[i][j] = j < kc ? acc[i][j] : kNegInf;
  }
}

inline void chunk_scores(const float* q, const float* kt, int64_t dh, int64_t kc, float* s) {
  chunk_scores<1>(&q, kt, dh, kc, reinterpret_cast<float (*)[kKeyChunk]>(s));
}

// Online softmax: folds one chunk's scores s[kc] into (m, l) and, when acc is given, the output
// acc[dh] += p_j * vb[j] (rescaled by exp(m_old - m_new)).
inline void online_update(const float* s, int64_t kc, float& m, float& l, float* acc,
                          const float* vb, int64_t dh) {
  float cmax = kNegInf;
  for (int64_t j = 0; j < kc; ++j) cmax = std::max(cmax, s[j]);
  const float m_new = std::max(m, cmax);
  const float corr = std::exp(m - m_new);  // 0 on the first chunk (m = -inf)
  float p[kKeyChunk];
  float psum = 0.f;
  for (int64_t j = 0; j < kc; ++j) p[j] = exp_nonpos(s[j] - m_new);  // vectorised
  for (int64_t j = 0; j < kc; ++j) psum += p[j];
  l = l * corr + psum;
  m = m_new;
  if (acc == nullptr) return;
  // acc = acc * corr + p . vb, kDimBlock dims at a time so the block stays in registers over j.
  int64_t d0 = 0;
  for (; d0 + kDimBlock <= dh; d0 += kDimBlock) {
    float a[kDimBlock];
    for (int64_t i = 0; i < kDimBlock; ++i) a[i] = acc[d0 + i] * corr;
    for (int64_t j = 0; j < kc; ++j) {
      const float pj = p[j];
      const float* v = vb + j * dh + d0;
      for (int64_t i = 0; i < kDimBlock; ++i) a[i] += pj * v[i];
    }
    for (int64_t i = 0; i < kDimBlock; ++i) acc[d0 + i] = a[i];
  }
  for (int64_t d = d0; d < dh; ++d) {  // dh % kDimBlock tail (e.g. dh = 80)
    float a = acc[d] * corr;
    for (int64_t j = 0; j < kc; ++j) a += p[j] * vb[j * dh + d];
    acc[d] = a;
  }
}

// Everything pass 1 and pass 2 read, with float copies of the (small) query tensors.
template <typename scalar_t>
struct Problem {
  AttnDims d;
  int64_t G;  // query heads per kv head
  KVSource<scalar_t> kv;
  const float* qs;  // [T, H, dh] q / sqrt(dh)
  const float* ps;  // [R, H, dh] prev_q / sqrt(dh), or null
  const int64_t* window;
  const int64_t* tracked;
};

// Pass 1 over the rows [r0, r1) of queries qrows ([rows, H, dh]) and kv head g: writes m, l
// ([rows, H]) and, when out is given, the normalised output out[rows, H, dh].
template <typename scalar_t>
void pass1_tile(const Problem<scalar_t>& pb, const float* qrows, bool current, int64_t r0,
                int64_t r1, int64_t g, float* m_out, float* l_out, scalar_t* out) {
  const int64_t dh = pb.d.dh, H = pb.d.H, G = pb.G, nq = (r1 - r0) * G;
  std::vector<float> m(nq, kNegInf), l(nq, 0.f), kt(dh * kKeyChunk), vb(kKeyChunk * dh);
  std::vector<float> acc(out ? nq * dh : 0, 0.f);
  float s[2][kKeyChunk];
  auto qvec = [&](int64_t i) {  // query i of the tile: (row, head) index into [rows, H] times dh
    return qrows + ((r0 + i / G) * H + g * G + i % G) * dh;
  };
  for (int64_t p0 = 0; p0 < pb.d.n; p0 += kKeyChunk) {
    const int64_t kc = std::min(kKeyChunk, pb.d.n - p0);
    gather_keys(pb.kv, current, p0, kc, g, kt.data());
    if (out) gather_values(pb.kv, p0, kc, g, vb.data());
    for (int64_t i = 0; i < nq; i += 2) {  // two queries per kt pass; a lone last one alone
      const int nb = i + 1 < nq ? 2 : 1;
      const float* qp[2] = {qvec(i), qvec(std::min(i + 1, nq - 1))};
      if (nb == 2) {
        chunk_scores<2>(qp, kt.data(), dh, kc, s);
      } else {
        chunk_scores<1>(qp, kt.data(), dh, kc, s);
      }
      for (int k = 0; k < nb; ++k) {
        float* a = out ? acc.data() + (i + k) * dh : nullptr;
        online_update(s[k], kc, m[i + k], l[i + k], a, vb.data(), dh);
      }
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t qi = (r0 + i / G) * H + g * G + i % G;
    m_out[qi] = m[i];
    l_out[qi] = l[i];
    if (!out) continue;
    const float inv_l = 1.f / l[i];
    for (int64_t d = 0; d < dh; ++d)
      out[qi * dh + d] = static_cast<scalar_t>(acc[i * dh + d] * inv_l);
  }
}

// Pass 1 for `rows` query rows, parallel over (kv head, row tile).
template <typename scalar_t>
void pass1(const Problem<scalar_t>& pb, const float* qrows, int64_t rows, bool current, float* m,
           float* l, scalar_t* out) {
  if (rows == 0) return;
  const int64_t want = kItemsPerThread * at::get_num_threads();
  const int64_t tiles = std::min(rows, std::max<int64_t>(1, (want + pb.d.Hkv - 1) / pb.d.Hkv));
  const int64_t tile_rows = (rows + tiles - 1) / tiles;
  at::parallel_for(0, pb.d.Hkv * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / tiles, r0 = (item % tiles) * tile_rows;
      if (r0 < rows)
        pass1_tile(pb, qrows, current, r0, std::min(rows, r0 + tile_rows), g, m, l, out);
    }
  });
}

// Normalised final (m, l) per query vector: p = exp(s - m) * inv_l.
struct SoftmaxStats {
  const float* m;
  const float* l;
};

// Pass 2 over key chunk c: mass[p] of its keys, head-mode drift[3, R, n] columns of its keys, or
// the key-mode partial sums part[c][H][R][3] = (sum a*b, sum a*a, sum b*b).
template <typename scalar_t>
void pass2_chunk(const Problem<scalar_t>& pb, int64_t c, SoftmaxStats now, SoftmaxStats prev,
                 bool head_mode, float* mass, float* drift, double* part) {
  const AttnDims& d = pb.d;
  const int64_t dh = d.dh, p0 = c * kKeyChunk, kc = std::min(kKeyChunk, d.n - p0);
  std::vector<float> kt(dh * kKeyChunk), kt_old(d.drift ? dh * kKeyChunk : 0);
  float mass_acc[kKeyChunk] = {};
  float sb[kKeyChunk], sa[kKeyChunk];
  if (d.drift && head_mode) {
    for (int64_t k = 0; k < 3 * d.R; ++k) std::fill_n(drift + k * d.n + p0, kc, 0.f);
  }
  for (int64_t g = 0; g < d.Hkv; ++g) {
    gather_keys(pb.kv, true, p0, kc, g, kt.data());
    if (d.drift) gather_keys(pb.kv, false, p0, kc, g, kt_old.data());
    for (int64_t h = g * pb.G; h < (g + 1) * pb.G; ++h) {
      for (int64_t w = 0; w < d.W; ++w) {
        const int64_t qi = pb.window[w] * d.H + h;
        chunk_scores(pb.qs + qi * dh, kt.data(), dh, kc, sb);
        const float inv_l = 1.f / now.l[qi];
        for (int64_t j = 0; j < kc; ++j) mass_acc[j] += exp_nonpos(sb[j] - now.m[qi]) * inv_l;
      }
      if (!d.drift) continue;
      for (int64_t r = 0; r < d.R; ++r) {
        const int64_t qi = pb.tracked[r] * d.H + h, pi = r * d.H + h;
        chunk_scores(pb.qs + qi * dh, kt.data(), dh, kc, sb);
        chunk_scores(pb.ps + pi * dh, kt_old.data(), dh, kc, sa);
        const float inv_l = 1.f / now.l[qi], inv_lp = 1.f / prev.l[pi];
        double ab = 0, aa = 0, bb = 0;
        for (int64_t j = 0; j < kc; ++j) {
          const float b = exp_nonpos(sb[j] - now.m[qi]) * inv_l;
          const float a = exp_nonpos(sa[j] - prev.m[pi]) * inv_lp;
          if (head_mode) {
            drift[(0 * d.R + r) * d.n + p0 + j] += a * b;
            drift[(1 * d.R + r) * d.n + p0 + j] += a * a;
            drift[(2 * d.R + r) * d.n + p0 + j] += b * b;
          } else {
            ab += a * b;
            aa += a * a;
            bb += b * b;
          }
        }
        if (!head_mode) {
          double* dst = part + ((c * d.H + h) * d.R + r) * 3;
          dst[0] = ab;
          dst[1] = aa;
          dst[2] = bb;
        }
      }
    }
  }
  for (int64_t j = 0; j < kc; ++j) mass[p0 + j] = mass_acc[j];
}

// Key mode: drift = (sum over (h, r) of cos_hr, H * R) from the per-chunk partial sums.
void reduce_key_mode(const AttnDims& d, int64_t chunks, const double* part, float* drift) {
  double total = 0;
  for (int64_t hr = 0; hr < d.H * d.R; ++hr) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const double* src = part + (c * d.H * d.R + hr) * 3;
      ab += src[0];
      aa += src[1];
      bb += src[2];
    }
    const double na = std::max(std::sqrt(aa), static_cast<double>(kNormEps));
    const double nb = std::max(std::sqrt(bb), static_cast<double>(kNormEps));
    total += ab / (na * nb);
  }
  drift[0] = static_cast<float>(total);
  drift[1] = static_cast<float>(d.H * d.R);
}

template <typename scalar_t>
void run(const Problem<scalar_t>& pb, bool head_mode, scalar_t* out, float* mass, float* drift) {
  const AttnDims& d = pb.d;
  std::vector<float> m_now(d.T * d.H), l_now(d.T * d.H), m_prev(d.R * d.H), l_prev(d.R * d.H);
  pass1(pb, pb.qs, d.T, /*current=*/true, m_now.data(), l_now.data(), out);
  if (d.drift)
    pass1<scalar_t>(pb, pb.ps, d.R, /*current=*/false, m_prev.data(), l_prev.data(), nullptr);
  if (d.W == 0 && !d.drift) {
    std::fill_n(mass, d.n, 0.f);
    return;
  }
  const int64_t chunks = (d.n + kKeyChunk - 1) / kKeyChunk;
  std::vector<double> part(head_mode || !d.drift ? 0 : chunks * d.H * d.R * 3);
  const SoftmaxStats now{m_now.data(), l_now.data()}, prev{m_prev.data(), l_prev.data()};
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      pass2_chunk(pb, c, now, prev, head_mode, mass, drift, part.data());
  });
  if (d.drift && !head_mode) reduce_key_mode(d, chunks, part.data(), drift);
}

}  // namespace

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

  const at::Tensor qs =
      q.to(at::kFloat).mul(1.0 / std::sqrt(static_cast<double>(d.dh))).contiguous();
  const at::Tensor ps =
      d.drift ? prev_q.to(at::kFloat).mul(1.0 / std::sqrt(static_cast<double>(d.dh))).contiguous()
              : at::Tensor();
  const at::Tensor kn = k_new.contiguous(), vn = v_new.contiguous();
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor o = at::empty({d.T, d.H, d.dh}, q.options());
  at::Tensor mass = at::empty({n}, f32);
  at::Tensor drift = at::empty(drift_shape(d, cosine_over_heads), f32);

  ELASTIC_DISPATCH(q.scalar_type(), "elastic_attention_cpu", [&] {
    KVSource<scalar_t> kv{kcache.data_ptr<scalar_t>(),
                          vcache.data_ptr<scalar_t>(),
                          {kcache.stride(0), kcache.stride(1), kcache.stride(2)},
                          {vcache.stride(0), vcache.stride(1), vcache.stride(2)},
                          bt64.data_ptr<int64_t>(),
                          d.block_size,
                          kn.data_ptr<scalar_t>(),
                          vn.data_ptr<scalar_t>(),
                          pos_row.data(),
                          d.Hkv,
                          d.dh};
    Problem<scalar_t> pb{d,
                         d.H / d.Hkv,
                         kv,
                         qs.data_ptr<float>(),
                         d.drift ? ps.data_ptr<float>() : nullptr,
                         win64.data_ptr<int64_t>(),
                         trk64.data_ptr<int64_t>()};
    run(pb, cosine_over_heads, o.data_ptr<scalar_t>(), mass.data_ptr<float>(),
        drift.data_ptr<float>());
  });
  return {o, mass, drift};
}

}  // namespace vllm_elastic
