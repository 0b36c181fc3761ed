"""The attention of one Elastic-Cache layer step, with its statistics, over paged K/V: the torch twin.

One call gives what a layer of a cached decode needs from attention (research/elastic_cache.md §1.3
items 3-4): the output of this step's query rows over all n keys, the mass each key receives from the
window rows (summed over heads and rows: the most-attended choice) and the drift partials of the
tracked rows (their attention before this step's cache update against after it).

K/V are read where the engine keeps them: pages ``[num_blocks, Hkv, block_size, dh]`` addressed by the
sequence's block table, position p in block ``block_table[p // block_size]`` at offset
``p % block_size`` (vLLM's CPU layout; a contiguous ``[n, Hkv, dh]`` cache is the one-block case,
``LayerCache.kv_pages``). This step's rows override the cached K/V at their positions; the op never
writes the caches, the caller stores ``k_new``/``v_new`` afterwards.

This file is the reference: ``csrc/elastic_attention_*.{cpp,cu}`` compute the same with an online
softmax straight from the pages, without gathering the keys or materialising probabilities, and
``vllm_elastic.ops.elastic_attention`` picks the kernel when it is built. The twin gathers the keys
and materialises probabilities of the window and tracked rows only ([H, R + W, n]).
"""

from __future__ import annotations

import torch

from . import policy
from .attention import attend, row_probs


def elastic_attention_ref(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    rows: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_table: torch.Tensor,
    n: int,
    window: torch.Tensor,
    tracked: torch.Tensor,
    prev_q: torch.Tensor,
    cosine_over_heads: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q: [T, H, dh]; k_new, v_new: [T, Hkv, dh]; rows: [T] positions; caches: [nb, Hkv, bs, dh];
    block_table: [ceil(n / bs)]; window: [W], tracked: [R] indices into T; prev_q: [R, H, dh] or
    empty (no drift test).

    Returns o [T, H, dh] (q's dtype), mass float32 [n] (window rows, all heads), drift float32:
    ``[3, R, n]`` (``cosine_over_heads``) or ``[2]`` (policy.drift_partials), empty without prev_q.
    """
    k = _current(k_new, rows, key_cache, block_table, n)  # [n, Hkv, dh]
    v = _current(v_new, rows, value_cache, block_table, n)
    stat_rows = torch.cat([tracked, window])  # [R + W]
    o, probs = attend(q, k, v, stat_rows if stat_rows.numel() else None)  # o [T, H*dh]
    o = o.view_as(q)  # [T, H, dh]
    num_tracked = tracked.numel()
    mass = q.new_zeros(n, dtype=torch.float32)  # [n]
    if window.numel():
        mass = policy.attention_mass_partial(probs[:, num_tracked:])  # [n]
    if prev_q.numel() == 0:
        return o, mass, mass.new_zeros(0)
    old_k = gather_pages(key_cache, block_table, n)  # [n, Hkv, dh] before this step
    prev = row_probs(prev_q.transpose(0, 1), old_k.transpose(0, 1))  # [H, R, n]
    mode = policy.COSINE_OVER_HEADS if cosine_over_heads else policy.COSINE_OVER_KEYS
    drift = policy.drift_partials(prev, probs[:, :num_tracked], mode)  # flat
    if cosine_over_heads:
        drift = drift.view(3, num_tracked, n)  # [3, R, n]
    return o, mass, drift


def gather_pages(cache: torch.Tensor, block_table: torch.Tensor, n: int) -> torch.Tensor:
    """The n positions of one sequence: [nb, Hkv, bs, dh] pages -> [n, Hkv, dh] (a copy)."""
    block_size = cache.shape[2]
    pos = torch.arange(n, device=cache.device)  # [n]
    block = block_table.to(device=cache.device, dtype=torch.long)[pos // block_size]  # [n]
    return cache[block, :, pos % block_size]  # [n, Hkv, dh]


def _current(
    new: torch.Tensor, rows: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, n: int
) -> torch.Tensor:
    """The keys (or values) as of this step: the cache with this step's rows written over it."""
    if rows.numel() == n:  # every position is new: the cache is not read
        out = new.new_empty(n, *new.shape[1:])  # [n, Hkv, dh]
    else:
        out = gather_pages(cache, block_table, n)
    out[rows] = new
    return out
