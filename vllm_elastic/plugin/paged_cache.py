"""A sequence's per-layer caches stored in vLLM's paged KV blocks.

The core's ``forward_plans`` reads and writes a ``LayerCache`` (``core/cache.py``): k, v [L, N, Hkv, dh],
q [L, N, H, dh] and x [L, N, d], indexed as ``t[layer]`` (all N positions) or ``t[layer, rows]``.
``PagedLayerCache`` offers that same surface, but every position lives in the request's vLLM blocks:
position p of the canvas is slot ``block_ids[p // block_size] * block_size + p % block_size`` of every
layer's KV tensor, the addressing vLLM's own attention kernels use. So the algorithm stays in core/
(driven by the core decoder states), while vLLM's KV cache manager allocates, counts and frees the
memory: the scheduler admits a canvas only when its blocks fit, and a request's blocks go back to the
pool when it finishes or is aborted.

Where each cache lives (one KV cache group, so one block table for all of them):
- k, v: the page of the block's ``Attention`` layer, vLLM's CPU layout
  ``[num_blocks, Hkv, block_size, 2 * dh]`` = per (block, head) all keys then all values
  (``CPUAttentionBackendImpl.forward`` views it as ``[num_blocks, Hkv, 2 * block_size, dh]``).
- q, x: the page of the block's ``RefreshState`` layer, the same spec with all H heads of the model:
  the "value" half holds the layer input x [d] = [H, dh] (LLaDA has d == H * dh), the "key" half q
  [H/tp, dh] in its first heads. A separate layer rather than a bigger attention page, so the stock
  attention kernel's page stays as vLLM expects (research/vllm_v1_hooks.md Q3).

Tensor parallel: a rank's pages hold its shard of the heads for k, v (Hkv/tp) and q (H/tp), and the
whole layer input x, which every rank needs to restart a refresh from a middle layer (x is the
replicated residual stream; sharding it would cost an all-gather per refresh).

What a step writes is exactly what ``forward_plans`` writes: below the refresh layer only the computed
rows of that layer, from the refresh layer on all N rows of each layer; always in this request's own
blocks (prefix caching is off, so no block is shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.v1.kv_cache_interface import FullAttentionSpec

KEY_HALF, VALUE_HALF = 0, 1  # the two halves of a page cell (vLLM: keys, then values)


class BlocksMoved(RuntimeError):
    """A request's blocks changed under its caches (see ``PagedLayerCache.bind``)."""


class RefreshState(nn.Module, AttentionLayerBase):
    """Declares one layer's refresh state (q and x) to vLLM's KV cache manager; no weights, no math.

    vLLM sizes, allocates and binds its page like an attention layer's: it registers in the
    ``static_forward_context`` under its prefix and returns a ``FullAttentionSpec`` like the layer's
    ``Attention`` but with ``num_heads`` heads, so both land in one KV cache group.
    """

    def __init__(self, attn: nn.Module, num_heads: int, vllm_config, prefix: str) -> None:
        super().__init__()
        self.layer_name = prefix
        self.num_heads = num_heads
        self.head_size = attn.head_size
        self.dtype = attn.kv_cache_torch_dtype
        self.backend = attn.get_attn_backend()  # same backend: same attention group and builder
        context = vllm_config.compilation_config.static_forward_context
        if prefix in context:
            raise ValueError(f"Duplicate layer name: {prefix}")
        context[prefix] = self

    def get_attn_backend(self):
        return self.backend

    def get_kv_cache_spec(self, vllm_config) -> FullAttentionSpec:
        return FullAttentionSpec(
            block_size=vllm_config.cache_config.block_size,
            num_kv_heads=self.num_heads,
            head_size=self.head_size,
            dtype=self.dtype,
        )


class PagedTensor:
    """One cache (k, v, q or x) of one sequence, indexed like the core's [L, N, *row] tensor.

    ``t[layer]`` -> [N, *row] and ``t[layer, rows]`` -> [R, *row] gather from the pages;
    assignments scatter into them. Reads return copies (the core never writes through a read).
    """

    __slots__ = ("block", "offset", "pages", "row_shape")

    def __init__(self, pages: list[torch.Tensor], row_shape: tuple[int, ...]) -> None:
        self.pages = pages  # per layer [num_blocks, heads, block_size, dh] (one half of the page)
        self.row_shape = row_shape  # one position: (heads, dh) or (d,)
        self.block: torch.Tensor | None = None  # [N] block id of every position
        self.offset: torch.Tensor | None = None  # [N] its offset inside the block

    def _locate(self, key) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            layer, rows = key
            return self.pages[layer], self.block[rows], self.offset[rows]
        return self.pages[key], self.block, self.offset

    def __getitem__(self, key) -> torch.Tensor:
        page, block, offset = self._locate(key)
        return page[block, :, offset].reshape(-1, *self.row_shape)  # [R, *row]

    def __setitem__(self, key, value: torch.Tensor) -> None:
        page, block, offset = self._locate(key)
        heads, dh = page.shape[1], page.shape[3]
        page[block, :, offset] = value.reshape(-1, heads, dh)  # [R, heads, dh]


@dataclass(slots=True)
class PagedLayerCache:
    """``LayerCache``'s surface over one request's blocks (``bind`` before every step)."""

    n: int  # positions of the canvas
    k: PagedTensor
    v: PagedTensor
    q: PagedTensor | None = None
    x: PagedTensor | None = None
    block_ids: tuple[int, ...] = ()  # what the slots were computed from
    table: torch.Tensor | None = None  # [num blocks] the block table as a tensor (``bind``)

    def kv_pages(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's K/V pages in place ([num_blocks, Hkv, block_size, dh] views of vLLM's KV
        tensor, no copy) and this sequence's block table, for ``ops.elastic_attention``."""
        return self.k.pages[layer], self.v.pages[layer], self.table

    def bind(self, block_ids: list[int], block_size: int) -> bool:
        """Address the canvas through ``block_ids``; False when they do not cover all N positions.

        Raises ``BlocksMoved`` when blocks already in use were replaced: their caches are gone
        (a preempted request), and decoding on would read another request's or no data.
        """
        if tuple(block_ids) == self.block_ids:
            return True
        if tuple(block_ids[: len(self.block_ids)]) != self.block_ids:
            raise BlocksMoved(f"KV blocks {self.block_ids} became {tuple(block_ids)}")
        if len(block_ids) * block_size < self.n:
            return False
        device = self.k.pages[0].device
        pos = torch.arange(self.n, device=device)  # [N]
        self.table = torch.tensor(block_ids, dtype=torch.long, device=device)  # [num blocks]
        block = self.table[pos // block_size]  # [N]
        offset = pos % block_size  # [N]
        for t in (self.k, self.v, self.q, self.x):
            if t is not None:
                t.block, t.offset = block, offset
        self.block_ids = tuple(block_ids)
        return True


@dataclass(slots=True)
class PagedStore:
    """Every layer's page halves, cut from the KV tensors vLLM allocated (scheduler block ids)."""

    keys: list[torch.Tensor]  # per layer [num_blocks, Hkv, block_size, dh]
    values: list[torch.Tensor]
    queries: list[torch.Tensor]  # per layer [num_blocks, H/tp, block_size, dh] (view of the page)
    inputs: list[torch.Tensor]  # per layer [num_blocks, H, block_size, dh], x as [H, dh]
    block_size: int
    d_model: int

    @classmethod
    def from_kv_caches(cls, kv_caches: dict[str, torch.Tensor], model) -> PagedStore:
        """kv_caches: layer name -> [num_blocks, heads, block_size, 2 dh] (vLLM's per-layer views)."""
        store = cls.from_pages(
            [kv_caches[b.attn.layer_name] for b in model.blocks],
            [kv_caches[b.refresh_state.layer_name] for b in model.blocks],
            model.config.d_model,
            q_heads=model.blocks[0].n_heads,  # this rank's query heads
        )
        dtype = next(model.parameters()).dtype
        if store.keys[0].dtype != dtype:
            raise ValueError(f"paged caches need a KV cache dtype of {dtype} ('auto')")
        return store

    @classmethod
    def from_pages(
        cls,
        attn: list[torch.Tensor],
        state: list[torch.Tensor],
        d_model: int,
        q_heads: int | None = None,
    ) -> PagedStore:
        """attn, state: per layer [num_blocks, heads, block_size, 2 dh] (Hkv/tp and H heads);
        q_heads: the query heads on this rank (default: all of the state page's heads)."""
        keys, values = zip(*map(_halves, attn))
        queries, inputs = zip(*map(_halves, state))
        if queries[0].shape[1] * queries[0].shape[3] != d_model:
            raise ValueError("the refresh state page needs d_model == heads * head_dim")
        q_heads = queries[0].shape[1] if q_heads is None else q_heads
        return cls(
            keys=list(keys),
            values=list(values),
            queries=[q[:, :q_heads] for q in queries],  # views: writes land in the page
            inputs=list(inputs),
            block_size=keys[0].shape[2],
            d_model=d_model,
        )

    def cache_for(self, n: int, keep_inputs: bool) -> PagedLayerCache:
        """An unbound cache of n positions; q and x only where a refresh may start mid-stack."""
        heads_kv, dh = self.keys[0].shape[1], self.keys[0].shape[3]
        heads = self.queries[0].shape[1]
        cache = PagedLayerCache(
            n=n,
            k=PagedTensor(self.keys, (heads_kv, dh)),
            v=PagedTensor(self.values, (heads_kv, dh)),
        )
        if keep_inputs:
            cache.q = PagedTensor(self.queries, (heads, dh))
            cache.x = PagedTensor(self.inputs, (self.d_model,))
        return cache


def _halves(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[num_blocks, heads, block_size, 2 dh] -> keys, values [num_blocks, heads, block_size, dh]."""
    if kv.dim() != 4:
        raise NotImplementedError(
            f"paged caches need vLLM's CPU page layout, got {tuple(kv.shape)}"
        )
    num_blocks, heads, block_size, cell = kv.shape
    paired = kv.view(num_blocks, heads, 2, block_size, cell // 2)  # the CPU kernel's view
    return paired[:, :, KEY_HALF], paired[:, :, VALUE_HALF]
