"""The torch twin of the fused attention op against dense attention, and paged against dense storage."""

from __future__ import annotations

import math

import pytest
import torch

from vllm_elastic import ops
from vllm_elastic.core import policy
from vllm_elastic.core.elastic_attention import elastic_attention_ref, gather_pages

H, HKV, DH, N, BS = 4, 2, 16, 37, 8


def _paged(dense: torch.Tensor, table: torch.Tensor, generator: torch.Generator):
    """dense [N, Hkv, dh] -> a half of vLLM's CPU page [nb, Hkv, 2 bs, dh], blocks ``table``."""
    page = torch.randn(len(table) + 3, HKV, 2 * BS, DH, generator=generator)  # junk elsewhere
    half = page[:, :, :BS]  # the key half: a strided view
    padded = torch.cat([dense, dense.new_zeros(len(table) * BS - N, HKV, DH)])  # [nb*bs, Hkv, dh]
    half[table] = padded.view(len(table), BS, HKV, DH).transpose(1, 2)
    return half


def _inputs(generator, t=6, r=2, w=3):
    rows = torch.randperm(N, generator=generator)[:t]  # [T] positions, any order
    q = torch.randn(t, H, DH, generator=generator)
    k_new, v_new = (torch.randn(t, HKV, DH, generator=generator) for _ in range(2))
    idx = torch.randperm(t, generator=generator)
    tracked, window = idx[:r], idx[r : r + w]
    prev_q = torch.randn(r, H, DH, generator=generator)
    return q, k_new, v_new, rows, window, tracked, prev_q


@pytest.mark.parametrize("heads_mode", [True, False])
def test_twin_equals_dense_attention(heads_mode):
    g = torch.Generator().manual_seed(7)
    old_k, old_v = torch.randn(N, HKV, DH, generator=g), torch.randn(N, HKV, DH, generator=g)
    q, k_new, v_new, rows, window, tracked, prev_q = _inputs(g)
    num = math.ceil(N / BS)
    table = torch.randperm(num + 3, generator=g)[:num]  # non-contiguous, shuffled block ids
    key_pages, value_pages = _paged(old_k, table, g), _paged(old_v, table, g)
    assert torch.equal(gather_pages(key_pages, table, N), old_k)

    o, mass, drift = elastic_attention_ref(
        q, k_new, v_new, rows, key_pages, value_pages, table, N, window, tracked, prev_q, heads_mode
    )
    k, v = old_k.clone(), old_v.clone()
    k[rows], v[rows] = k_new, v_new
    kh = k.repeat_interleave(H // HKV, dim=1).transpose(0, 1)  # [H, N, dh]
    vh = v.repeat_interleave(H // HKV, dim=1).transpose(0, 1)
    probs = (q.transpose(0, 1) @ kh.transpose(1, 2) / math.sqrt(DH)).softmax(-1)  # [H, T, N]
    torch.testing.assert_close(o, (probs @ vh).transpose(0, 1))
    torch.testing.assert_close(mass, probs[:, window].sum((0, 1)))
    old_kh = old_k.repeat_interleave(H // HKV, dim=1).transpose(0, 1)
    prev = (prev_q.transpose(0, 1) @ old_kh.transpose(1, 2) / math.sqrt(DH)).softmax(-1)
    mode = policy.COSINE_OVER_HEADS if heads_mode else policy.COSINE_OVER_KEYS
    expected = policy.drift_partials(prev, probs[:, tracked], mode)
    torch.testing.assert_close(drift.flatten(), expected)


def test_all_rows_new_reads_no_cache():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(N, H, DH, generator=g)
    k, v = torch.randn(N, HKV, DH, generator=g), torch.randn(N, HKV, DH, generator=g)
    rows = torch.randperm(N, generator=g)
    empty = k.new_empty(0, HKV, BS, DH)
    none = rows[:0]
    o, mass, drift = ops.elastic_attention(
        q, k, v, rows, empty, empty, none, N, none, none, q[:0], True
    )
    kk, vv = torch.empty_like(k), torch.empty_like(v)
    kk[rows], vv[rows] = k, v
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1),
        kk.repeat_interleave(2, 1).transpose(0, 1),
        vv.repeat_interleave(2, 1).transpose(0, 1),
    ).transpose(0, 1)
    torch.testing.assert_close(o, expected)
    assert torch.equal(mass, torch.zeros(N)) and drift.numel() == 0
