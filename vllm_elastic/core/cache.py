"""Per-sequence, per-layer caches of a cached decode (never stored on nn.Modules)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .model import LLaDAModel


@dataclass(slots=True)
class LayerCache:
    """Full-length per-layer tensors of one sequence of N positions.

    x: layer inputs [L, N, d] (only kept where a refresh may start mid-stack: Elastic-Cache);
    q: post-RoPE queries [L, N, H, dh] (for the drift test's previous attention);
    k, v: post-RoPE keys and values [L, N, Hkv, dh].
    """

    k: torch.Tensor
    v: torch.Tensor
    q: torch.Tensor | None = None
    x: torch.Tensor | None = None

    @classmethod
    def allocate(cls, model: LLaDAModel, n: int, keep_inputs: bool) -> LayerCache:
        """Zeros for n positions, with the heads of ``model``'s blocks: under tensor parallel a
        rank's blocks hold H/tp (and Hkv/tp) heads, while x is the whole (replicated) layer
        input."""
        cfg, block = model.config, model.blocks[0]
        p = next(model.parameters())
        kv = (cfg.n_layers, n, block.n_kv_heads, block.head_dim)
        opts = {"dtype": p.dtype, "device": p.device}
        if not keep_inputs:
            return cls(k=torch.zeros(kv, **opts), v=torch.zeros(kv, **opts))
        return cls(
            k=torch.zeros(kv, **opts),
            v=torch.zeros(kv, **opts),
            q=torch.zeros(cfg.n_layers, n, block.n_heads, block.head_dim, **opts),
            x=torch.zeros(cfg.n_layers, n, cfg.d_model, **opts),
        )

    def kv_pages(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's K/V as pages for ``ops.elastic_attention``: one block of all N positions.

        Returns views [1, Hkv, N, dh] (no copy) and the block table [1].
        """
        table = torch.zeros(1, dtype=torch.long, device=self.k.device)
        return self.k[layer].transpose(0, 1)[None], self.v[layer].transpose(0, 1)[None], table


# (model, n, keep_inputs) -> the caches of one sequence; an engine passes its own (e.g. paged
# storage) through ``generate.new_state``. It must offer LayerCache's indexing surface.
CacheFactory = Callable[[LLaDAModel, int, bool], LayerCache]
