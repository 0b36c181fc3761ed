// Inner loops of the CPU kernels of elastic_attention and elastic_attention_varlen (spec:
// vllm_elastic/core/elastic_attention.py). Both ops describe their work as a Batch of SeqWork (one
// sequence is the batch of one) and call run().
//
// The GEMM path (every sequence, unless VLLM_ELASTIC_CPU_PATH=loops: uses_gemm) runs both passes of
// a sequence as GEMMs over its gathered keys and values (gemm_head in elastic_attention_cpu_run.h),
// one work item per (sequence, kv head); its statistics come from the probabilities the output was
// made of.
// The loop path, kept so that tests can hold it to the twin too, has two passes:
// Pass 1 (output): flash-attention style. A work item is (sequence, kv head g, tile of its rows):
// as few tiles as keep every thread busy (kItemsPerThread items each), since a tile pays one K/V
// gather per chunk; it gathers each chunk of kKeyChunk keys/values once (converted to float, keys
// transposed to [dh][kKeyChunk] so that the score loop runs over contiguous keys and vectorises
// without reassociation), then updates an online softmax (max m, sum l, output acc) for every
// (row, query head of the group). The same routine gives (m, l) of prev_q over the old keys.
// Pass 2 (statistics): a work item is one chunk of keys of one sequence; it recomputes the scores
// of the window and tracked rows over its keys, normalises them with the final (m, l) and owns the
// mass / head-mode drift of its keys, so there are no races; key-mode partial sums go to a
// per-chunk buffer reduced at the end.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace vllm_elastic {
namespace cpu {

constexpr int64_t kKeyChunk = 32;  // keys per chunk: one query's scores fit 4 AVX2 registers
// Pass-1 work items per thread: enough for balance, few so that a K/V chunk is gathered once for
// many rows.
constexpr int64_t kItemsPerThread = 4;
// Output dims kept in registers while a chunk's values are summed.
constexpr int64_t kDimBlock = 32;
constexpr float kNormEps = 1e-8f;  // key-mode cosine: norms are clamped to at least this
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// dst[0:len] = src[0:len] as float (a plain copy for float: the buffers never overlap).
template <typename scalar_t>
inline void to_float(const scalar_t* __restrict src, int64_t len, float* __restrict dst) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    std::memcpy(dst, src, len * sizeof(float));
  } else {
    for (int64_t d = 0; d < len; ++d) dst[d] = static_cast<float>(src[d]);
  }
}

// Where the keys/values of (position p, kv head g) of one sequence live. dh is contiguous.
template <typename scalar_t>
struct KVSource {
  const scalar_t* k_cache;
  const scalar_t* v_cache;
  int64_t ks[3];               // key_cache strides of (block, kv head, token), in elements
  int64_t vs[3];               // value_cache strides
  const int64_t* block_table;  // this sequence's blocks
  int64_t block_size;
  const scalar_t* k_new;  // [T, Hkv, dh] contiguous: this step's packed rows
  const scalar_t* v_new;
  const int32_t* pos_row;  // [n]: packed row of p in k_new, or -1 (read the cache)
  const scalar_t* zeros;   // [dh] zeros when the sequence does not read its cache, else null
  int64_t Hkv, dh;

  // current = the keys of this step (k_new where overridden); otherwise the cache as passed.
  const scalar_t* key(int64_t p, int64_t g, bool current) const {
    if (current && pos_row[p] >= 0) return k_new + (pos_row[p] * Hkv + g) * dh;
    if (zeros != nullptr) return zeros;
    const int64_t b = block_table[p / block_size];
    return k_cache + b * ks[0] + g * ks[1] + (p % block_size) * ks[2];
  }
  const scalar_t* value(int64_t p, int64_t g) const {
    if (pos_row[p] >= 0) return v_new + (pos_row[p] * Hkv + g) * dh;
    if (zeros != nullptr) return zeros;
    const int64_t b = block_table[p / block_size];
    return v_cache + b * vs[0] + g * vs[1] + (p % block_size) * vs[2];
  }

  // dst[n, dh] = the current keys (values: keys = false) of positions 0..n-1 of kv head g as
  // float. A page's cells are copied as one run where they are contiguous, and then this step's
  // rows are copied over them: one copy per page instead of one per position, since most
  // positions are read from the cache.
  void gather(bool keys, int64_t n, int64_t g, float* dst) const {
    const scalar_t* cache = keys ? k_cache : v_cache;
    const int64_t* st = keys ? ks : vs;
    // Without a cache (block_size 0) every position is one of this step's rows.
    const int64_t run = block_size > 0 ? block_size : std::max<int64_t>(n, 1);
    for (int64_t p0 = 0; p0 < n; p0 += run) {
      const int64_t len = std::min(run, n - p0);
      const int32_t* rows = pos_row + p0;
      if (std::all_of(rows, rows + len, [](int32_t r) { return r >= 0; })) {
        // every position is this step's: the cache is not read
      } else if (zeros != nullptr) {
        std::fill(dst + p0 * dh, dst + (p0 + len) * dh, 0.f);
      } else {
        const scalar_t* cells = cache + block_table[p0 / block_size] * st[0] + g * st[1];
        if (st[2] == dh) {
          to_float(cells, len * dh, dst + p0 * dh);
        } else {
          for (int64_t j = 0; j < len; ++j) to_float(cells + j * st[2], dh, dst + (p0 + j) * dh);
        }
      }
      for (int64_t j = 0; j < len; ++j) {  // this step's rows: key() and value() give them
        if (rows[j] < 0) continue;
        const int64_t p = p0 + j;
        to_float(keys ? key(p, g, /*current=*/true) : value(p, g), dh, dst + p * dh);
      }
    }
  }
};

// One sequence of a call: its keys, its query rows and the rows its statistics are taken of.
template <typename scalar_t>
struct SeqWork {
  KVSource<scalar_t> kv;
  int64_t n = 0;                     // keys
  int64_t row0 = 0, rows = 0;        // its packed query rows [row0, row0 + rows)
  std::vector<int64_t> window;       // packed rows whose attention mass is summed
  std::vector<int64_t> tracked;      // packed rows whose drift is measured (present ones only)
  std::vector<int64_t> slots;        // their slot k: prev_q row prev0 + k, heads row k
  int64_t prev0 = 0, prev_rows = 0;  // its prev_q rows [prev0, prev0 + prev_rows)
  float* mass = nullptr;             // [n]
  float* heads =
      nullptr;            // (a.b, a.a, b.b) of slot k, key p at heads[c * hc + k * hk + p], or null
  float* keys = nullptr;  // keys[0] = sum of the cosines of (head, row), keys[kr] = their count
  int64_t part0 = 0;      // its first key-mode partial sum in the pass-2 buffer

  bool has_stats() const { return !window.empty() || !tracked.empty(); }
  int64_t chunks() const { return (n + kKeyChunk - 1) / kKeyChunk; }
};

// Which path a sequence takes depends on the sequence alone, never on its neighbours in the batch,
// so that a request's arithmetic is the same alone and batched. Every sequence takes the GEMM path
// (gemm_head, elastic_attention_cpu_run.h): it is faster from one row up (BENCHMARKS.md §11: 16
// sequences over 550 keys, 4 heads of 64, two threads: 35 rows each in 3.3 against 15.3 ms, one
// row each in 1.9 against 5.6 ms). The loops remain for VLLM_ELASTIC_CPU_PATH=loops, which tests
// hold to the twin like the GEMM path.
constexpr const char* kCpuPathEnv = "VLLM_ELASTIC_CPU_PATH";

// Query vectors per kv head from which a sequence takes the GEMM path in this call.
inline int64_t gemm_min_queries() {
  const char* env = std::getenv(kCpuPathEnv);
  return env && std::string(env) == "loops" ? std::numeric_limits<int64_t>::max() : 1;
}

// Everything pass 1 and pass 2 read, with float copies of the (small) query tensors.
template <typename scalar_t>
struct Batch {
  int64_t H = 0, Hkv = 0, G = 0, dh = 0;  // G: query heads per kv head
  const float* qs = nullptr;              // [T, H, dh] q / sqrt(dh)
  const float* ps = nullptr;              // [slots, H, dh] prev_q / sqrt(dh), or null
  int64_t hc = 0, hk = 0, kr = 0;         // strides of SeqWork::heads and SeqWork::keys
  std::vector<SeqWork<scalar_t>> seqs;
  int64_t gemm_min = 1;  // query vectors per kv head from which a sequence takes the GEMM path
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

// Pass 1 over the query rows [r0, r1) of qrows ([rows, H, dh]) of sequence s and kv head g:
// writes m, l ([rows, H]) and, when out is given, the normalised output out[rows, H, dh].
template <typename scalar_t>
void pass1_tile(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s, const float* qrows,
                bool current, int64_t r0, int64_t r1, int64_t g, float* m_out, float* l_out,
                scalar_t* out) {
  const int64_t dh = b.dh, H = b.H, G = b.G, nq = (r1 - r0) * G;
  std::vector<float> m(nq, kNegInf), l(nq, 0.f), kt(dh * kKeyChunk), vb(kKeyChunk * dh);
  std::vector<float> acc(out ? nq * dh : 0, 0.f);
  float sc[2][kKeyChunk];
  auto qvec = [&](int64_t i) {  // query i of the tile: (row, head) index into [rows, H] times dh
    return qrows + ((r0 + i / G) * H + g * G + i % G) * dh;
  };
  for (int64_t p0 = 0; p0 < s.n; p0 += kKeyChunk) {
    const int64_t kc = std::min(kKeyChunk, s.n - p0);
    gather_keys(s.kv, current, p0, kc, g, kt.data());
    if (out) gather_values(s.kv, p0, kc, g, vb.data());
    for (int64_t i = 0; i < nq; i += 2) {  // two queries per kt pass; a lone last one alone
      const int nb = i + 1 < nq ? 2 : 1;
      const float* qp[2] = {qvec(i), qvec(std::min(i + 1, nq - 1))};
      if (nb == 2) {
        chunk_scores<2>(qp, kt.data(), dh, kc, sc);
      } else {
        chunk_scores<1>(qp, kt.data(), dh, kc, sc);
      }
      for (int k = 0; k < nb; ++k) {
        float* a = out ? acc.data() + (i + k) * dh : nullptr;
        online_update(sc[k], kc, m[i + k], l[i + k], a, vb.data(), dh);
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

template <typename scalar_t>
bool uses_gemm(const Batch<scalar_t>& b, const SeqWork<scalar_t>& s) {
  return s.rows * b.G >= b.gemm_min;
}

// Pass 1 of every sequence not on the GEMM path: its packed rows over the current keys (current,
// into out) or its prev_q rows over the old keys; parallel over (sequence, kv head, row tile).
template <typename scalar_t>
void pass1(const Batch<scalar_t>& b, bool current, float* m, float* l, scalar_t* out) {
  struct Tile {
    int64_t seq, g, r0, r1;
  };
  int64_t total = 0;
  for (const auto& s : b.seqs) total += uses_gemm(b, s) ? 0 : current ? s.rows : s.prev_rows;
  if (total == 0) return;
  const int64_t want = kItemsPerThread * at::get_num_threads();
  const int64_t tile_rows = std::max<int64_t>(1, (total * b.Hkv + want - 1) / want);
  std::vector<Tile> tiles;
  for (int64_t i = 0; i < static_cast<int64_t>(b.seqs.size()); ++i) {
    const auto& s = b.seqs[i];
    if (uses_gemm(b, s)) continue;
    const int64_t lo = current ? s.row0 : s.prev0, hi = lo + (current ? s.rows : s.prev_rows);
    for (int64_t g = 0; g < b.Hkv; ++g) {
      for (int64_t r0 = lo; r0 < hi; r0 += tile_rows)
        tiles.push_back({i, g, r0, std::min(hi, r0 + tile_rows)});
    }
  }
  const float* qrows = current ? b.qs : b.ps;
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Tile& t = tiles[i];
      pass1_tile(b, b.seqs[t.seq], qrows, current, t.r0, t.r1, t.g, m, l, out);
    }
  });
}

}  // namespace cpu
}  // namespace vllm_elastic
