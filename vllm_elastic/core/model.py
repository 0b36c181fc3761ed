"""The LLaDA-8B architecture in plain PyTorch (the released checkpoints' modeling_llada.py).

Pre-RMSNorm blocks, fully bidirectional attention (no causal mask), rotate-half RoPE at absolute
positions, SwiGLU MLP (``ff_proj`` gate, ``up_proj``, ``ff_out``) and a separate LM head. The block is
split into ``project_qkv`` and ``finish`` so that cached decoders can run attention their own way
between the two; ``forward`` is the plain no-cache pass used by training and the reference sampler.
Parameter names follow the HF checkpoint (``model.transformer.blocks.{i}.q_proj.weight`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend
from .config import LLaDAConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NOTE: computed in float32 as LLaDA does, then cast back.
        xf = as_float32(x)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return as_dtype(xf * as_float32(self.weight), x.dtype)


def as_float32(x: torch.Tensor) -> torch.Tensor:
    # A no-op ``.float()`` is still one dispatched op; a decode step runs this a few times a layer.
    return x if x.dtype == torch.float32 else x.float()


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)


class Rotary(nn.Module):
    """Rotate-half RoPE with ``inv_freq = theta^(-2i/d)``, tables in float32 (rope_full_precision)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos, signed sin [T, 1, dh] (shaped to broadcast over the heads).

        The sin table's first half is negated: rotate-half's ``cat(-x2, x1) * sin`` is then
        ``cat(x2, x1) * signed_sin``, one ``roll`` of x (bit for bit the same products)."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # [T, dh/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # [T, 1, dh]
        sin, half = emb.sin(), freqs.shape[-1]
        return emb.cos(), torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x: [..., T, H, dh]; cos, signed_sin: [T, 1, dh] (``Rotary``'s tables)."""
    xf = as_float32(x)
    swapped = xf.roll(xf.shape[-1] // 2, dims=-1)  # cat(x2, x1) [..., T, H, dh]
    return as_dtype(xf * cos + swapped * signed_sin, x.dtype)


class LLaDABlock(nn.Module):
    """One LLaDALlamaBlock; holds weights only (per-request caches live in the decoders)."""

    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=False)

    def project_qkv(
        self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h: [..., T, d] -> q [..., T, H, dh], k and v [..., T, Hkv, dh] (RoPE applied to q, k).

        ``rope``: what the model's ``rotary`` gave for the T rows' positions (here cos and sin)."""
        cos, sin = rope
        a = self.attn_norm(h)
        shape = h.shape[:-1]
        q = self.q_proj(a).view(*shape, self.n_heads, self.head_dim)  # [..., T, H, dh]
        k = self.k_proj(a).view(*shape, self.n_kv_heads, self.head_dim)  # [..., T, Hkv, dh]
        v = self.v_proj(a).view(*shape, self.n_kv_heads, self.head_dim)  # [..., T, Hkv, dh]
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual attention output then SwiGLU MLP. h, attn: [..., T, d] -> [..., T, d]."""
        h = h + self.attn_out(attn)
        n = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(n)) * self.up_proj(n))


class LLaDAStack:
    """The per-layer interface ``forward_step`` drives, shared by this model and the vLLM one.

    Needs ``self.config`` (LLaDAConfig) and ``self.transformer`` with ``wte`` and ``blocks``.
    """

    config: LLaDAConfig
    transformer: nn.ModuleDict

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer["blocks"]

    @property
    def num_layers(self) -> int:
        return self.config.n_layers

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer["wte"](ids)  # [..., T, d]


class LLaDAModel(LLaDAStack, nn.Module):
    """LLaDAModelLM: ``transformer.{wte, blocks, ln_f, ff_out}``."""

    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.embedding_size, cfg.d_model),
                "blocks": nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
                "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
                "ff_out": nn.Linear(cfg.d_model, cfg.embedding_size, bias=False),
            }
        )
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.transformer["ff_out"](self.transformer["ln_f"](h)).float()  # [..., T, V]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """No-cache bidirectional pass. ids: [B, T] -> logits [B, T, V] (float32)."""
        positions = torch.arange(ids.shape[-1], device=ids.device)
        rope = self.rotary(positions)  # cos, sin [T, 1, dh]
        h = self.embed(ids)  # [B, T, d]
        for block in self.blocks:
            q, k, v = block.project_qkv(h, rope)
            o, _ = attend(q, k, v)  # [B, T, d]
            h = block.finish(h, o)
        return self.logits(h)
