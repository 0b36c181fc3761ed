"""vLLM's norm and RoPE kernels against LLaDA's math written out here in plain torch."""

import pytest
import torch

from vllm_elastic.plugin.norm_rope import FusedRMSNorm, FusedRotary, rotate_qk_

EPS = 1e-5


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    xf = x.double()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * weight.double()
    return out.to(x.dtype)


def rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, H, dh], rotate-half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), in float64."""
    dh = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angle = positions.double()[:, None, None] * inv_freq  # [T, 1, dh/2]
    x1, x2 = x.double().chunk(2, dim=-1)
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_llada_math(dtype):
    gen = torch.Generator().manual_seed(0)
    norm = FusedRMSNorm(96, EPS)
    norm.weight.data = torch.randn(96, generator=gen)
    x = (torch.randn(37, 96, generator=gen) * 3).to(dtype)
    out = norm(x)
    assert out.dtype == dtype and out.shape == x.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), rms_norm_reference(x, norm.weight).float(), atol=tol,
                               rtol=tol)  # fmt: skip


def test_rotate_qk_rotates_q_and_k_in_place_and_leaves_v():
    gen = torch.Generator().manual_seed(1)
    T, H, Hkv, dh, theta = 29, 4, 2, 32, 10000.0
    positions = torch.randint(0, 500, (T,), generator=gen)
    qkv = torch.randn(T, (H + 2 * Hkv) * dh, generator=gen)
    before = qkv.clone()
    rotate_qk_(qkv, H * dh, Hkv * dh, FusedRotary(dh, theta, 512)(positions))
    q, k, v = qkv.split([H * dh, Hkv * dh, Hkv * dh], dim=-1)
    q0, k0, v0 = before.split([H * dh, Hkv * dh, Hkv * dh], dim=-1)
    for got, x in ((q, q0), (k, k0)):
        want = rope_reference(x.reshape(T, -1, dh), positions, theta)
        torch.testing.assert_close(got.reshape(T, -1, dh).double(), want, atol=2e-5, rtol=1e-5)
    assert torch.equal(v, v0)


def test_rotate_qk_refuses_low_precision():
    with pytest.raises(ValueError, match="float32"):
        rotate_qk_(torch.zeros(2, 12, dtype=torch.bfloat16), 4, 4,
                   FusedRotary(4, 10000.0, 8)(torch.arange(2)))  # fmt: skip
