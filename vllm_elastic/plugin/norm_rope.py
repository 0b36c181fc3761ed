"""LLaDA's RMSNorm and RoPE on vLLM's kernels (``_C.rms_norm``, ``_C.rotary_embedding``).

The core's ``RMSNorm`` and ``apply_rope`` are the same math written as torch ops: about seven
dispatched ops a norm and eight for q and k's RoPE, which at a decode step's few dozen rows
cost more than their arithmetic. vLLM's kernels do each in one call, in the engine the plugin
already runs on. Both keep LLaDA's precision: the norm and the rotation run in float32 (a
bfloat16 input is cast up, then its result back), with the RoPE table in float32
(``rope_full_precision``). The results agree with the core's to float32 rounding (a kernel's own
order of the same products), so plugin and core decode the same tokens
(``tests/plugin/test_offline.py``), not bit for bit the same logits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from vllm import _custom_ops as vllm_ops

from ..core.model import RMSNorm


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


class FusedRMSNorm(RMSNorm):
    """The core's ``RMSNorm`` (same parameter, same checkpoint name) in one vLLM kernel call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _float32(x).contiguous()  # [..., d]: the kernel reads rows of d
        out = torch.empty_like(xf)
        vllm_ops.rms_norm(out, xf, _float32(self.weight), self.eps)
        return out if out.dtype == x.dtype else out.to(x.dtype)


class RopeRows(NamedTuple):
    """What ``FusedRotary`` gives ``project_qkv`` for a step's rows."""

    positions: torch.Tensor  # [T] int64
    cos_sin: torch.Tensor  # [max_positions, dh] float32: cos of the dh/2 frequencies, then sin


class FusedRotary(nn.Module):
    """Rotate-half RoPE, ``inv_freq = theta^(-2i/d)``: the core's ``Rotary`` tables, precomputed
    for every position below ``max_positions`` (vLLM's ``cos_sin_cache`` layout). The kernel
    does not check positions: every row the engine runs must lie below it."""

    def __init__(self, head_dim: int, theta: float, max_positions: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        # the products the core's Rotary forms per step, here once for every position
        freqs = torch.arange(max_positions).float()[:, None] * inv_freq[None, :]  # [P, dh/2]
        self.register_buffer("cos_sin", torch.cat([freqs.cos(), freqs.sin()], -1), persistent=False)

    def forward(self, positions: torch.Tensor) -> RopeRows:
        return RopeRows(positions, self.cos_sin)


def rotate_qk_(qkv: torch.Tensor, q_width: int, k_width: int, rope: RopeRows) -> None:
    """Rotate, in place, the q and k parts of a float32 projection ``qkv`` [T, q + k + v widths]
    (vLLM's models rotate the views of their fresh qkv the same way)."""
    if qkv.dtype != torch.float32:
        raise ValueError(f"RoPE runs in float32 (rope_full_precision), got {qkv.dtype}")
    q, k = qkv[:, :q_width], qkv[:, q_width : q_width + k_width]  # views into qkv
    head_dim = rope.cos_sin.shape[-1]
    is_neox = True  # rotate-half, LLaDA's layout
    vllm_ops.rotary_embedding(rope.positions, q, k, head_dim, rope.cos_sin, is_neox)
