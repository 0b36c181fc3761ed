"""One Elastic-Cache layer step's attention for a whole batch, with its statistics: the torch twin.

One call gives what a layer of a cached decode needs from attention, for every sequence of the
step at once (the most-attended choice and drift test of Elastic-Cache's modeling_llada.py): the
output of the step's query rows over all keys of their own sequence, the mass each key receives
from the sequence's window rows (summed over heads and rows: the most-attended choice) and the
drift partials of its tracked rows (their attention before this step's cache update against after
it).

Varlen layout: the step's rows are packed, sequence after sequence (``cu_rows``); row i belongs to
sequence ``row_seq[i]`` at position ``row_pos[i]``. K/V are read where the engine keeps them: pages
``[num_blocks, Hkv, block_size, dh]`` addressed by each sequence's block table (vLLM's CPU layout),
for the sequences that read their cache (``reads_cache``); this step's rows override the cached K/V
at their positions. The op never writes the caches: the caller stores ``k_new``/``v_new`` after it.

This file is the reference: ``csrc/`` kernels compute the same, and ``vllm_elastic.ops`` picks one.
The twin pads the batch to ``[R, max_rows]`` queries and ``[R, max_len]`` keys (one SDPA call with a
key mask) and materialises probabilities of the window and tracked rows only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import policy
from .attention import attend, row_probs
from .policy import COSINE_EPS


def elastic_attention_varlen_ref(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    row_seq: torch.Tensor,
    row_pos: torch.Tensor,
    cu_rows: torch.Tensor,
    max_rows: int,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    max_len: int,
    reads_cache: torch.Tensor,
    window: torch.Tensor,
    tracked: torch.Tensor,
    prev_q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q: [T, H, dh]; k_new, v_new: [T, Hkv, dh]; row_seq, row_pos: [T]; cu_rows: [R + 1];
    caches: [nb, Hkv, bs, dh]; block_tables: [R, max_blocks] (entries past a sequence's blocks
    are ignored); seq_lens: [R]; reads_cache: bool [R]; window: [R, W], tracked: [R, K] row
    indices into T (-1: none); prev_q: [R, K, H, dh] the tracked rows' queries of the previous
    step (K = 0: no drift test).

    Returns o [T, H, dh] (q's dtype); mass float32 [R, max_len] (0 past a sequence's length);
    drift partials float32 ``heads`` [3, R, K, max_len] (a.b, a.a, b.b summed over heads per
    (row, key)) and ``keys`` [2, R] (sum of each head's cosine over the keys, and their count),
    a = before, b = after; rows with tracked -1 contribute nothing.
    """
    num_seqs, heads, dh = seq_lens.numel(), q.shape[1], q.shape[2]
    pos = torch.arange(max_len, device=q.device)  # [n]
    key_valid = pos[None, :] < seq_lens[:, None]  # [R, n]
    kept = key_valid & reads_cache[:, None]  # [R, n] keys read from the pages
    old_k = _gather(key_cache, block_tables, kept, max_len)  # [R, n, Hkv, dh]
    k_all = old_k.clone()
    v_all = _gather(value_cache, block_tables, kept, max_len)
    k_all[row_seq, row_pos] = k_new.to(k_all.dtype)
    v_all[row_seq, row_pos] = v_new.to(v_all.dtype)
    groups = heads // k_all.shape[2]
    kh = k_all.transpose(1, 2).repeat_interleave(groups, dim=1)  # [R, H, n, dh]
    vh = v_all.transpose(1, 2).repeat_interleave(groups, dim=1)
    local = torch.arange(q.shape[0], device=q.device) - cu_rows[row_seq]  # [T]
    q_pad = q.new_zeros(num_seqs, max_rows, heads, dh)
    q_pad[row_seq, local] = q
    o_pad = F.scaled_dot_product_attention(
        q_pad.transpose(1, 2), kh, vh, attn_mask=key_valid[:, None, None, :]
    )  # [R, H, max_rows, dh]
    o = o_pad.transpose(1, 2)[row_seq, local]  # [T, H, dh]
    mass = _probs(q, window, kh, key_valid).sum(dim=(1, 2))  # [R, n]
    num_tracked = tracked.shape[1]
    if num_tracked == 0:
        empty = mass.new_zeros(3, num_seqs, 0, max_len)
        return o, mass, empty, mass.new_zeros(2, num_seqs)
    now = _probs(q, tracked, kh, key_valid)  # [R, H, K, n]
    old_kh = old_k.transpose(1, 2).repeat_interleave(groups, dim=1)  # [R, H, n, dh]
    prev = _row_probs(prev_q.transpose(1, 2), old_kh, key_valid)  # [R, H, K, n]
    prev = torch.where((tracked >= 0)[:, None, :, None], prev, 0.0)  # absent rows: nothing read
    heads_part = torch.stack(
        [(prev * now).sum(1), (prev * prev).sum(1), (now * now).sum(1)]
    )  # [3, R, K, n]
    cos = F.cosine_similarity(prev, now, dim=-1, eps=COSINE_EPS)  # [R, H, K]
    rows_valid = (tracked >= 0)[:, None, :].expand_as(cos)  # [R, H, K]
    keys_part = torch.stack([(cos * rows_valid).sum((1, 2)), rows_valid.sum((1, 2)).float()])
    return o, mass, heads_part, keys_part  # keys_part [2, R]


def _gather(
    cache: torch.Tensor, block_tables: torch.Tensor, kept: torch.Tensor, n: int
) -> torch.Tensor:
    """Every sequence's n positions from the pages: [nb, Hkv, bs, dh] -> [R, n, Hkv, dh] (a copy;
    zeros where ``kept`` [R, n] is False: cells past a sequence's end are never trusted)."""
    num_seqs = block_tables.shape[0]
    shape = (num_seqs, n, cache.shape[1], cache.shape[3])
    if cache.shape[0] == 0 or block_tables.shape[1] == 0:
        return cache.new_zeros(shape)
    bs = cache.shape[2]
    pos = torch.arange(n, device=cache.device)  # [n]
    cols = (pos // bs).clamp(max=block_tables.shape[1] - 1)  # [n]
    block = block_tables[:, cols].clamp(0, cache.shape[0] - 1)  # [R, n]
    out = cache[block, :, (pos % bs)[None, :].expand_as(block)]  # [R, n, Hkv, dh]
    return torch.where(kept[:, :, None, None], out, 0.0)


def _probs(
    q: torch.Tensor, rows: torch.Tensor, kh: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    """Attention probabilities of the chosen rows of each sequence: rows [R, W] (-1: none) ->
    [R, H, W, n] float32, zero for absent rows and past each sequence's length."""
    qr = q[rows.clamp(min=0)]  # [R, W, H, dh]
    probs = _row_probs(qr.transpose(1, 2), kh, key_valid)  # [R, H, W, n]
    return torch.where((rows >= 0)[:, None, :, None], probs, 0.0)


def _row_probs(qh: torch.Tensor, kh: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) over each sequence's valid keys, in float32.
    qh: [R, H, W, dh]; kh: [R, H, n, dh]; key_valid: [R, n] -> [R, H, W, n]."""
    scores = qh.float() @ kh.float().transpose(-1, -2) / math.sqrt(qh.shape[-1])
    scores = scores.masked_fill(~key_valid[:, None, None, :], -torch.inf)
    return scores.softmax(dim=-1)


# The one-sequence form, which the compiled kernels implement today (tests/kernels hold them equal).
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
