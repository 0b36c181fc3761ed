"""Bidirectional attention of some query rows over all keys, plus the probabilities of chosen rows.

The output goes through ``scaled_dot_product_attention`` (no mask: LLaDA is fully bidirectional);
probabilities are materialised only for the rows Elastic-Cache needs (window and tracked rows), never
for every row (at LLaDA-8B's 32 heads and N = 1024 that would be 128 MB per sequence and layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prob_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q: [..., T, H, dh]; k, v: [..., N, Hkv, dh]; prob_rows: indices into T.

    Returns the attention output [..., T, H*dh] and, when ``prob_rows`` is given, the probabilities
    of those rows [..., H, R, N] in float32.
    """
    qh, kh, vh = q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2)  # [..., H, T, dh]
    groups = qh.shape[-3] // kh.shape[-3]
    if groups > 1:
        kh = kh.repeat_interleave(groups, dim=-3)  # [..., H, N, dh]
        vh = vh.repeat_interleave(groups, dim=-3)
    o = F.scaled_dot_product_attention(qh, kh, vh)  # [..., H, T, dh]
    o = o.transpose(-3, -2).flatten(-2)  # [..., T, H*dh]
    if prob_rows is None:
        return o, None
    return o, row_probs(qh.index_select(-2, prob_rows), kh)


def row_probs(qh: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) in float32. qh: [..., H, R, dh]; kh: [..., H, N, dh] -> [..., H, R, N]."""
    if kh.shape[-3] != qh.shape[-3]:
        kh = kh.repeat_interleave(qh.shape[-3] // kh.shape[-3], dim=-3)
    scores = qh.float() @ kh.float().transpose(-1, -2) / math.sqrt(qh.shape[-1])  # [..., H, R, N]
    return scores.softmax(dim=-1)
