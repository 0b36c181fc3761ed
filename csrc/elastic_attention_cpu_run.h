// Pass 2 of the CPU kernels' loop path (the statistics), the GEMM path (both passes, per sequence
// and kv head), and run(), which runs them all; pass 1 and the shared pieces are in
// elastic_attention_cpu_kernels.h (its header comment describes the paths).
#pragma once

#include "elastic_attention_cpu_kernels.h"

namespace vllm_elastic {
namespace cpu {

// Normalised final (m, l) per query vector: p = exp(s - m) * inv_l.
struct SoftmaxStats {
  const float* m;
  const float* l;
};

// One key j of one (head, tracked row): a = its previous probability, b = its current one. Adds
// (a.b, a.a, b.b) to the head-mode columns (when kept: heads[c * hc + j]) and the key-mode sums.
inline void add_drift(float* heads, int64_t hc, int64_t j, float aj, float bj, double& ab,
                      double& aa, double& bb) {
  if (heads) {
    heads[j] += aj * bj;
    heads[hc + j] += aj * aj;
    heads[2 * hc + j] += bj * bj;
  }
  ab += aj * bj;
  aa += aj * aj;
  bb += bj * bj;
}

// The key-mode cosine of one (head, tracked row) from a.b, a.a and b.b over its keys, with both
// norms clamped to at least kNormEps.
inline double clamped_cosine(double ab, double aa, double bb) {
  const double na = std::max(std::sqrt(aa), static_cast<double>(kNormEps));
  const double nb = std::max(std::sqrt(bb), static_cast<double>(kNormEps));
  return ab / (na * nb);
}

// Key mode of sequence s: keys = (the cosines summed over (head, tracked row), their count).
template <typename scalar_t>
void set_key_mode(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, double total) {
  s.keys[0] = static_cast<float>(total);
  s.keys[b.kr] = static_cast<float>(b.H * static_cast<int64_t>(s.tracked.size()));
}

// Pass 2 over key chunk c of sequence s: mass of its keys, the head-mode drift columns of its keys
// and the key-mode partial sums part[s.part0 + ((c * H + h) * tracked + t) * 3] = (a.b, a.a, b.b).
template <typename scalar_t>
void pass2_chunk(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, int64_t c, SoftmaxStats now,
                 SoftmaxStats prev, double* part) {
  const int64_t dh = b.dh, H = b.H, p0 = c * kKeyChunk, kc = std::min(kKeyChunk, s.n - p0);
  const int64_t nt = static_cast<int64_t>(s.tracked.size());
  std::vector<float> kt(dh * kKeyChunk), kt_old(nt ? dh * kKeyChunk : 0);
  float mass_acc[kKeyChunk] = {};
  float sb[kKeyChunk], sa[kKeyChunk];
  for (int64_t g = 0; g < b.Hkv; ++g) {
    gather_keys(s.kv, true, p0, kc, g, kt.data());
    if (nt) gather_keys(s.kv, false, p0, kc, g, kt_old.data());
    for (int64_t h = g * b.G; h < (g + 1) * b.G; ++h) {
      for (const int64_t row : s.window) {
        const int64_t qi = row * H + h;
        chunk_scores(b.qs + qi * dh, kt.data(), dh, kc, sb);
        const float inv_l = 1.f / now.l[qi];
        for (int64_t j = 0; j < kc; ++j) mass_acc[j] += exp_nonpos(sb[j] - now.m[qi]) * inv_l;
      }
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t qi = s.tracked[t] * H + h, pi = (s.prev0 + s.slots[t]) * H + h;
        chunk_scores(b.qs + qi * dh, kt.data(), dh, kc, sb);
        chunk_scores(b.ps + pi * dh, kt_old.data(), dh, kc, sa);
        const float inv_l = 1.f / now.l[qi], inv_lp = 1.f / prev.l[pi];
        float* heads = s.heads ? s.heads + s.slots[t] * b.hk + p0 : nullptr;
        double ab = 0, aa = 0, bb = 0;
        for (int64_t j = 0; j < kc; ++j) {
          const float bj = exp_nonpos(sb[j] - now.m[qi]) * inv_l;
          const float aj = exp_nonpos(sa[j] - prev.m[pi]) * inv_lp;
          add_drift(heads, b.hc, j, aj, bj, ab, aa, bb);
        }
        if (part == nullptr) continue;
        double* dst = part + s.part0 + ((c * H + h) * nt + t) * 3;
        dst[0] = ab;
        dst[1] = aa;
        dst[2] = bb;
      }
    }
  }
  for (int64_t j = 0; j < kc; ++j) s.mass[p0 + j] = mass_acc[j];
}

// Key mode of sequence s: keys = (sum over (head, tracked row) of their cosine over the keys,
// their count) from the per-chunk partial sums.
template <typename scalar_t>
void reduce_key_mode(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, const double* part) {
  const int64_t nt = static_cast<int64_t>(s.tracked.size()), chunks = s.chunks();
  double total = 0;
  for (int64_t ht = 0; ht < b.H * nt; ++ht) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const double* src = part + s.part0 + (c * b.H * nt + ht) * 3;
      ab += src[0];
      aa += src[1];
      bb += src[2];
    }
    total += clamped_cosine(ab, aa, bb);
  }
  set_key_mode(b, s, total);
}

// Independent accumulators of a reduction over a row: the compiler vectorises across them, where
// one accumulator is a serial chain (without -ffast-math it may not reorder float sums).
constexpr int64_t kLanes = 16;

// Key mode of one (head, tracked row): dst = (a.b, a.a, b.b) over its n keys, a = prev * inv_prev
// and b = now * inv_now, summed in kLanes float lanes (so that the loop vectorises) and the lanes
// in double.
inline void key_mode_sums(const float* prev, float inv_prev, const float* now, float inv_now,
                          int64_t n, double* dst) {
  float ab[kLanes] = {}, aa[kLanes] = {}, bb[kLanes] = {};
  const int64_t body = n - n % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int64_t c = 0; c < kLanes; ++c) {
      const float a = prev[j + c] * inv_prev, b = now[j + c] * inv_now;
      ab[c] += a * b;
      aa[c] += a * a;
      bb[c] += b * b;
    }
  }
  double sums[3] = {0, 0, 0};
  for (int64_t j = body; j < n; ++j) {
    const float a = prev[j] * inv_prev, b = now[j] * inv_now;
    sums[0] += a * b;
    sums[1] += a * a;
    sums[2] += b * b;
  }
  for (int64_t c = 0; c < kLanes; ++c) {
    sums[0] += ab[c];
    sums[1] += aa[c];
    sums[2] += bb[c];
  }
  std::copy(sums, sums + 3, dst);
}

// A row-major float matrix [rows, cols] as a tensor that views buffer (no copy).
inline at::Tensor view(float* buffer, int64_t rows, int64_t cols) {
  return at::from_blob(buffer, {rows, cols}, at::TensorOptions().dtype(at::kFloat));
}

// This thread's scratch floats, kept between calls so that a call neither allocates nor zeroes
// them.
inline float* scratch(int64_t size) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// row[j] -> exp(row[j] - m) in place, m = the row's max; returns m and writes the sum of the
// exponentials to l. The sum adds lane j % kLanes first, then the lanes in order.
inline float softmax_row(float* row, int64_t n, float* l) {
  float lane[kLanes];
  std::fill(lane, lane + kLanes, kNegInf);
  const int64_t body = n - n % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int64_t c = 0; c < kLanes; ++c) lane[c] = std::max(lane[c], row[j + c]);
  }
  float m = kNegInf;
  for (int64_t j = body; j < n; ++j) m = std::max(m, row[j]);
  for (int64_t c = 0; c < kLanes; ++c) m = std::max(m, lane[c]);
  std::fill(lane, lane + kLanes, 0.f);
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int64_t c = 0; c < kLanes; ++c) {
      row[j + c] = exp_nonpos(row[j + c] - m);
      lane[c] += row[j + c];
    }
  }
  float sum = 0.f;
  for (int64_t j = body; j < n; ++j) {
    row[j] = exp_nonpos(row[j] - m);
    sum += row[j];
  }
  for (int64_t c = 0; c < kLanes; ++c) sum += lane[c];
  *l = sum;
  return m;
}

// c[m, n] = a[m, k] b[n, k]^T (trans_b) or a[m, k] b[k, n], all row-major and contiguous.
inline void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
                   bool trans_b) {
  float* bm = const_cast<float*>(b);
  at::Tensor out = view(c, m, n);
  at::mm_out(out, view(const_cast<float*>(a), m, k), trans_b ? view(bm, n, k).t() : view(bm, k, n));
}

// Where one sequence on the GEMM path puts what its kv heads observe, for reduce_gemm to sum over
// them in a fixed order: per kv head g, the window mass [n] at mass + g n (null without window
// rows) and the head-mode drift columns [tracked, 3, n] at heads + g tracked 3 n (null without
// them); per (head h, tracked row t) the key-mode sums (a.b, a.a, b.b) at drift + (h tracked + t) 3
// (null without key mode).
struct GemmParts {
  float* mass;
  float* heads;
  double* drift;
};

// dot(a, b) over len floats in kLanes float lanes (the loop vectorises), the lanes in order.
inline float dot_lanes(const float* a, const float* b, int64_t len) {
  float lane[kLanes] = {};
  const int64_t body = len - len % kLanes;
  for (int64_t d = 0; d < body; d += kLanes) {
    for (int64_t c = 0; c < kLanes; ++c) lane[c] += a[d + c] * b[d + c];
  }
  float sum = 0.f;
  for (int64_t d = body; d < len; ++d) sum += a[d] * b[d];
  for (int64_t c = 0; c < kLanes; ++c) sum += lane[c];
  return sum;
}

// Both passes of kv head g of sequence s with GEMMs over its gathered keys and values:
// scores = Q K^T over its query vectors (row r, head h of the group at r * G + h - g G), then the
// unnormalised probabilities p in place, (m, l), the output p V / l, and the statistics from p:
// the window rows' mass and, for the tracked rows, b = p / l beside a = the previous queries'
// probabilities over the old keys. The previous queries join the scores GEMM as more rows: the
// old keys differ from the current ones only at this step's rows, whose columns are then
// recomputed with the old keys. The same results as pass1_tile and pass2_chunk up to rounding. A
// work item owns (sequence, kv head), whose outputs no other item writes.
template <typename scalar_t>
void gemm_head(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, int64_t g, float* m_out,
               float* l_out, scalar_t* out, GemmParts part) {
  const int64_t dh = b.dh, H = b.H, G = b.G, n = s.n, nq = s.rows * G;
  const int64_t nt = static_cast<int64_t>(s.tracked.size()), na = nt * G;
  // Buffers, each written in full before it is read: the query vectors q [nq + na, dh] (this
  // step's, then the tracked rows' previous ones), k, v [n, dh], scores and then probabilities
  // p [nq + na, n] (the previous queries' from row nq: pa), o [nq, dh], l [nq], one old key [dh].
  float* q = scratch((nq + na) * dh + 2 * n * dh + (nq + na) * n + nq * dh + nq + dh);
  float *k = q + (nq + na) * dh, *v = k + n * dh, *p = v + n * dh;
  float *o = p + (nq + na) * n, *l = o + nq * dh, *k_old = l + nq;
  float *qa = q + nq * dh, *pa = p + nq * n;
  for (int64_t i = 0; i < nq; ++i) {
    const float* src = b.qs + ((s.row0 + i / G) * H + g * G + i % G) * dh;
    std::copy(src, src + dh, q + i * dh);
  }
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t hg = 0; hg < G; ++hg) {
      const float* src = b.ps + ((s.prev0 + s.slots[t]) * H + g * G + hg) * dh;
      std::copy(src, src + dh, qa + (t * G + hg) * dh);
    }
  }
  s.kv.gather(/*keys=*/true, n, g, k);
  s.kv.gather(/*keys=*/false, n, g, v);
  matmul(q, k, p, nq + na, n, dh, /*trans_b=*/true);  // scores [nq + na, n]
  for (int64_t i = 0; i < nq; ++i) {                  // scores -> exp(s - m), in place
    const int64_t qi = (s.row0 + i / G) * H + g * G + i % G;
    m_out[qi] = softmax_row(p + i * n, n, l + i);
    l_out[qi] = l[i];
  }
  matmul(p, v, o, nq, dh, n, /*trans_b=*/false);  // p V [nq, dh], unnormalised
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t qi = (s.row0 + i / G) * H + g * G + i % G;
    const float inv_l = 1.f / l[i];
    for (int64_t d = 0; d < dh; ++d)
      out[qi * dh + d] = static_cast<scalar_t>(o[i * dh + d] * inv_l);
  }
  for (const int64_t row : s.window) {
    float* mass = part.mass + g * n;
    for (int64_t hg = 0; hg < G; ++hg) {
      const int64_t i = (row - s.row0) * G + hg;
      const float inv_l = 1.f / l[i];
      const float* pi = p + i * n;
      for (int64_t j = 0; j < n; ++j) mass[j] += pi[j] * inv_l;
    }
  }
  if (nt == 0) return;
  for (int64_t j = 0; j < n; ++j) {  // this step's positions: the previous scores of the old key
    if (s.kv.pos_row[j] < 0) continue;
    to_float(s.kv.key(j, g, /*current=*/false), dh, k_old);
    for (int64_t r = 0; r < na; ++r) pa[r * n + j] = dot_lanes(qa + r * dh, k_old, dh);
  }
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t hg = 0; hg < G; ++hg) {
      const int64_t h = g * G + hg, i = (s.tracked[t] - s.row0) * G + hg;
      float* prev_p = pa + (t * G + hg) * n;
      float prev_l;
      softmax_row(prev_p, n, &prev_l);
      const float inv_l = 1.f / l[i], inv_lp = 1.f / prev_l;
      const float* now = p + i * n;
      if (part.heads) {
        float* heads = part.heads + (g * nt + t) * 3 * n;
        for (int64_t j = 0; j < n; ++j) {
          const float bj = now[j] * inv_l, aj = prev_p[j] * inv_lp;
          heads[j] += aj * bj;
          heads[n + j] += aj * aj;
          heads[2 * n + j] += bj * bj;
        }
      }
      if (part.drift) key_mode_sums(prev_p, inv_lp, now, inv_l, n, part.drift + (h * nt + t) * 3);
    }
  }
}

// Sequence s's statistics from its kv heads' parts (gemm_head), summed over the heads in order.
template <typename scalar_t>
void reduce_gemm(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, GemmParts part) {
  const int64_t n = s.n, nt = static_cast<int64_t>(s.tracked.size());
  for (int64_t g = 0; g < b.Hkv; ++g) {
    if (part.mass) {
      for (int64_t j = 0; j < n; ++j) s.mass[j] += part.mass[g * n + j];
    }
    if (part.heads == nullptr) continue;
    for (int64_t t = 0; t < nt; ++t) {
      for (int64_t c = 0; c < 3; ++c) {
        const float* src = part.heads + ((g * nt + t) * 3 + c) * n;
        float* dst = s.heads + s.slots[t] * b.hk + c * b.hc;
        for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
      }
    }
  }
  if (part.drift == nullptr) return;
  double total = 0;  // key mode: the cosine of each (head, tracked row) over the keys, summed
  for (int64_t ht = 0; ht < b.H * nt; ++ht) {
    const double* d = part.drift + ht * 3;
    total += clamped_cosine(d[0], d[1], d[2]);
  }
  set_key_mode(b, s, total);
}

// Both passes of the sequences on the GEMM path, parallel over (sequence, kv head).
template <typename scalar_t>
void run_gemm(const Batch<scalar_t>& b, float* m_now, float* l_now, scalar_t* out) {
  struct Offsets {
    int64_t seq, mass, heads, drift;  // -1: the sequence has no such statistic
  };
  std::vector<Offsets> seqs;
  int64_t mass_size = 0, heads_size = 0, drift_size = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(b.seqs.size()); ++i) {
    const auto& s = b.seqs[i];
    if (!uses_gemm(b, s)) continue;
    const int64_t nt = static_cast<int64_t>(s.tracked.size());
    const bool mass = !s.window.empty();
    const bool heads = s.heads != nullptr && nt > 0, drift = s.keys != nullptr && nt > 0;
    seqs.push_back(
        {i, mass ? mass_size : -1, heads ? heads_size : -1, drift ? drift_size : -1});
    mass_size += mass ? b.Hkv * s.n : 0;
    heads_size += heads ? b.Hkv * nt * 3 * s.n : 0;
    drift_size += drift ? b.H * nt * 3 : 0;
  }
  std::vector<float> mass(mass_size), heads(heads_size);
  std::vector<double> drift(drift_size);
  auto parts = [&](const Offsets& o) {
    return GemmParts{o.mass < 0 ? nullptr : mass.data() + o.mass,
                     o.heads < 0 ? nullptr : heads.data() + o.heads,
                     o.drift < 0 ? nullptr : drift.data() + o.drift};
  };
  const int64_t items = static_cast<int64_t>(seqs.size()) * b.Hkv;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Offsets& o = seqs[i / b.Hkv];
      gemm_head(b, b.seqs[o.seq], i % b.Hkv, m_now, l_now, out, parts(o));
    }
  });
  for (const Offsets& o : seqs) {
    const auto& s = b.seqs[o.seq];
    if (s.has_stats()) reduce_gemm(b, s, parts(o));
  }
}

// Runs both passes. T: packed rows, slots: prev_q rows. out: [T, H, dh]; every SeqWork::mass,
// heads and keys must be zeroed by the caller (pass 2 skips sequences without statistics).
template <typename scalar_t>
void run(Batch<scalar_t>& b, int64_t T, int64_t slots, scalar_t* out) {
  b.gemm_min = gemm_min_queries();
  std::vector<float> m_now(T * b.H), l_now(T * b.H), m_prev(slots * b.H), l_prev(slots * b.H);
  if (b.ps) pass1<scalar_t>(b, /*current=*/false, m_prev.data(), l_prev.data(), nullptr);
  pass1(b, /*current=*/true, m_now.data(), l_now.data(), out);
  const SoftmaxStats now{m_now.data(), l_now.data()}, prev{m_prev.data(), l_prev.data()};
  run_gemm(b, m_now.data(), l_now.data(), out);
  std::vector<std::pair<int64_t, int64_t>> items;  // (sequence, key chunk)
  int64_t part_size = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(b.seqs.size()); ++i) {
    auto& s = b.seqs[i];
    if (!s.has_stats() || uses_gemm(b, s)) continue;
    for (int64_t c = 0; c < s.chunks(); ++c) items.emplace_back(i, c);
    if (s.keys == nullptr || s.tracked.empty()) continue;
    s.part0 = part_size;
    part_size += s.chunks() * b.H * static_cast<int64_t>(s.tracked.size()) * 3;
  }
  std::vector<double> part(part_size);
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto& s = b.seqs[items[i].first];
      double* p = s.keys != nullptr && !s.tracked.empty() ? part.data() : nullptr;
      pass2_chunk(b, s, items[i].second, now, prev, p);
    }
  });
  for (const auto& s : b.seqs) {
    if (s.keys != nullptr && !s.tracked.empty() && !uses_gemm(b, s))
      reduce_key_mode(b, s, part.data());
  }
}

}  // namespace cpu
}  // namespace vllm_elastic
