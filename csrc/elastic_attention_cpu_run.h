// Pass 2 of the CPU kernels (the statistics) and run(), which runs both passes; pass 1 and the
// shared pieces are in elastic_attention_cpu_kernels.h (its header comment describes both passes).
#pragma once

#include "elastic_attention_cpu_kernels.h"

namespace vllm_elastic {
namespace cpu {

// Normalised final (m, l) per query vector: p = exp(s - m) * inv_l.
struct SoftmaxStats {
  const float* m;
  const float* l;
};

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
          if (heads) {
            heads[j] += aj * bj;
            heads[b.hc + j] += aj * aj;
            heads[2 * b.hc + j] += bj * bj;
          }
          ab += aj * bj;
          aa += aj * aj;
          bb += bj * bj;
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
    const double na = std::max(std::sqrt(aa), static_cast<double>(kNormEps));
    const double nb = std::max(std::sqrt(bb), static_cast<double>(kNormEps));
    total += ab / (na * nb);
  }
  s.keys[0] = static_cast<float>(total);
  s.keys[b.kr] = static_cast<float>(b.H * nt);
}

// Runs both passes. T: packed rows, slots: prev_q rows. out: [T, H, dh]; every SeqWork::mass,
// heads and keys must be zeroed by the caller (pass 2 skips sequences without statistics).
template <typename scalar_t>
void run(Batch<scalar_t>& b, int64_t T, int64_t slots, scalar_t* out) {
  std::vector<float> m_now(T * b.H), l_now(T * b.H), m_prev(slots * b.H), l_prev(slots * b.H);
  pass1(b, /*current=*/true, m_now.data(), l_now.data(), out);
  if (b.ps) pass1<scalar_t>(b, /*current=*/false, m_prev.data(), l_prev.data(), nullptr);
  std::vector<std::pair<int64_t, int64_t>> items;  // (sequence, key chunk)
  int64_t part_size = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(b.seqs.size()); ++i) {
    auto& s = b.seqs[i];
    if (!s.has_stats()) continue;
    for (int64_t c = 0; c < s.chunks(); ++c) items.emplace_back(i, c);
    if (s.keys == nullptr || s.tracked.empty()) continue;
    s.part0 = part_size;
    part_size += s.chunks() * b.H * static_cast<int64_t>(s.tracked.size()) * 3;
  }
  std::vector<double> part(part_size);
  const SoftmaxStats now{m_now.data(), l_now.data()}, prev{m_prev.data(), l_prev.data()};
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto& s = b.seqs[items[i].first];
      double* p = s.keys != nullptr && !s.tracked.empty() ? part.data() : nullptr;
      pass2_chunk(b, s, items[i].second, now, prev, p);
    }
  });
  for (const auto& s : b.seqs) {
    if (s.keys != nullptr && !s.tracked.empty()) reduce_key_mode(b, s, part.data());
  }
}

}  // namespace cpu
}  // namespace vllm_elastic
