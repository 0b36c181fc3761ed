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

from ..core.model import RMSNorm, Rotary, as_dtype, as_float32


class FusedRMSNorm(RMSNorm):
    """The core's ``RMSNorm`` (same parameter, same checkpoint name) in one vLLM kernel call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = as_float32(x).contiguous()  # [..., d]: the kernel reads rows of d
        out = torch.empty_like(xf)
        vllm_ops.rms_norm(out, xf, as_float32(self.weight), self.eps)
        return as_dtype(out, x.dtype)


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
        # the core's tables, once for every position: cos repeats its dh/2 frequencies and the
        # signed sin is -sin then sin of them, so their halves are vLLM's cos and sin
        cos, signed_sin = Rotary(head_dim, theta)(torch.arange(max_positions))  # [P, 1, dh] each
        half = head_dim // 2
        cos_sin = torch.cat([cos[:, 0, :half], signed_sin[:, 0, half:]], -1)  # [P, dh]
        self.register_buffer("cos_sin", cos_sin, persistent=False)

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
