"""Paged per-layer caches shared by every sequence of a batch (never stored on nn.Modules).

Every cache a decoder keeps lives in pages ``[num_blocks, heads, block_size, dh]`` per layer, the
layout of vLLM's CPU attention: position p of a sequence is cell ``(table[p // block_size],
p % block_size)``, where ``table`` is the sequence's block table. One step of many sequences then
reads and writes all of them with one gather or scatter per cache and layer.

- keys, values: post-RoPE K/V ``[nb, Hkv, bs, dh]``;
- queries: post-RoPE queries ``[nb, H, bs, dh]`` (the drift test's previous attention);
- inputs: the layer inputs ``[nb, H, bs, d / H]`` (a refresh restarts a sequence mid-stack).

The core's ``KVPool`` owns its pages and hands out blocks; an engine passes its own pages with the
same four lists (the vLLM plugin's ``PagedStore``), and the block ids its scheduler allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from .model import LLaDAModel

DEFAULT_BLOCK_SIZE = 32


class Pages(Protocol):
    """What the batched forward reads and writes: per layer, one page tensor per cache."""

    keys: list[torch.Tensor]  # per layer [nb, Hkv, bs, dh]
    values: list[torch.Tensor]
    queries: list[torch.Tensor]  # per layer [nb, H, bs, dh] (empty list: none kept)
    inputs: list[torch.Tensor]  # per layer [nb, H, bs, d / H]
    block_size: int


@dataclass(slots=True)
class BlockTable:
    """One sequence's blocks in a pool: position p lives in block ``block_ids[p // block_size]``.

    ``keep_inputs``: the sequence also keeps queries and layer inputs (a refresh may start at a
    middle layer: Elastic-Cache). ``block_ids`` may be rebound by an engine between steps.
    """

    pages: Pages
    block_ids: list[int]
    keep_inputs: bool


@dataclass(slots=True)
class KVPool:
    """The core's own pages: a growing pool whose blocks are handed out to sequences in order."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    queries: list[torch.Tensor]
    inputs: list[torch.Tensor]
    block_size: int
    shapes: dict = field(default_factory=dict)  # cache name -> (heads, dh); dtype/device below
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    used: int = 0  # blocks handed out

    @classmethod
    def for_model(cls, model: LLaDAModel, block_size: int = DEFAULT_BLOCK_SIZE) -> KVPool:
        """An empty pool with the heads of ``model``'s blocks (a rank's shard under TP)."""
        block, cfg = model.blocks[0], model.config
        p = next(model.parameters())
        inputs_heads = cfg.n_heads if cfg.d_model % cfg.n_heads == 0 else 1
        shapes = {
            "keys": (block.n_kv_heads, block.head_dim),
            "values": (block.n_kv_heads, block.head_dim),
            "queries": (block.n_heads, block.head_dim),
            "inputs": (inputs_heads, cfg.d_model // inputs_heads),
        }
        pool = cls([], [], [], [], block_size, shapes, p.dtype, p.device)
        for name in shapes:
            getattr(pool, name).extend(pool._zeros(name, 0) for _ in range(cfg.n_layers))
        return pool

    @property
    def num_blocks(self) -> int:
        return self.keys[0].shape[0]

    def reserve(self, n: int, keep_inputs: bool) -> BlockTable:
        """Blocks for n positions (the pool grows as needed; blocks are not reused)."""
        count = -(-n // self.block_size)
        if self.used + count > self.num_blocks:
            self._grow(max(2 * self.num_blocks, self.used + count))
        ids = list(range(self.used, self.used + count))
        self.used += count
        return BlockTable(self, ids, keep_inputs)

    def _zeros(self, name: str, blocks: int) -> torch.Tensor:
        heads, dh = self.shapes[name]
        return torch.zeros(
            blocks, heads, self.block_size, dh, dtype=self.dtype, device=self.device
        )  # [nb, heads, bs, dh]

    def _grow(self, blocks: int) -> None:
        for name in self.shapes:
            pages = getattr(self, name)
            for layer, old in enumerate(pages):
                new = self._zeros(name, blocks)
                new[: old.shape[0]] = old
                pages[layer] = new
