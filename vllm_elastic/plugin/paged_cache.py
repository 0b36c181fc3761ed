"""A sequence's per-layer caches stored in vLLM's paged KV blocks.

The core's batched forward reads and writes pages (``core/kv_pool.py``): per layer, K/V, queries and
layer inputs as ``[num_blocks, heads, block_size, dh]``, a sequence's position p in cell
``(block_ids[p // block_size], p % block_size)``, the addressing vLLM's own attention kernels use.
``PagedStore`` cuts those pages out of the KV tensors vLLM allocated, and a request's ``BlockTable``
holds the block ids its scheduler gave it. So the algorithm stays in core/ (driven by the core
decoder states), while vLLM's KV cache manager allocates, counts and frees the memory: the scheduler
admits a canvas only when its blocks fit, and a request's blocks go back to the pool when it
finishes or is aborted.

Where each cache lives (one KV cache group, so one block table for all of them):
- k, v: the page of the block's ``Attention`` layer, vLLM's CPU layout
  ``[num_blocks, Hkv, block_size, 2 * dh]`` = per (block, head) all keys then all values
  (``CPUAttentionBackendImpl.forward`` views it as ``[num_blocks, Hkv, 2 * block_size, dh]``).
- q, x: the page of the block's ``RefreshState`` layer, the same spec with all H heads of the model:
  the "value" half holds the layer input x [d] = [H, dh] (LLaDA has d == H * dh), the "key" half q
  [H/tp, dh] in its first heads. A separate layer rather than a bigger attention page, so the stock
  attention kernel's page stays as vLLM expects.

Tensor parallel: a rank's pages hold its shard of the heads for k, v (Hkv/tp) and q (H/tp), and the
whole layer input x, which every rank needs to restart a refresh from a middle layer (x is the
replicated residual stream; sharding it would cost an all-gather per refresh).

What a step writes is exactly what the core's forward writes: below the refresh layer only the computed
rows of that layer, from the refresh layer on all N rows of each layer; always in this request's own
blocks (prefix caching is off, so no block is shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.v1.kv_cache_interface import FullAttentionSpec

from ..core.kv_pool import BlockTable

KEY_HALF, VALUE_HALF = 0, 1  # the two halves of a page cell (vLLM: keys, then values)


class BlocksMoved(RuntimeError):
    """A request's blocks changed under its caches (see ``bind``)."""


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


def bind(table: BlockTable, block_ids: list[int], block_size: int, n: int) -> bool:
    """Address a canvas of n positions through the scheduler's ``block_ids``; False while they do
    not cover all n positions yet.

    Raises ``BlocksMoved`` when blocks already in use were replaced: their caches are gone
    (a preempted request), and decoding on would read another request's or no data.
    """
    held = table.block_ids
    if list(block_ids) == held:
        return True
    if list(block_ids[: len(held)]) != held:
        raise BlocksMoved(f"KV blocks {tuple(held)} became {tuple(block_ids)}")
    if len(block_ids) * block_size < n:
        return False
    table.block_ids = list(block_ids)
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

    def table(self, keep_inputs: bool) -> BlockTable:
        """An unbound block table in these pages (``bind`` gives it the scheduler's blocks)."""
        return BlockTable(self, [], keep_inputs)


def _halves(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's KV tensor -> keys, values as [num_blocks, heads, block_size, dh] views.

    vLLM's CPU layout [num_blocks, heads, block_size, 2 dh] (the CPU kernel views a block's cell as
    keys then values), or FlashAttention's [2, num_blocks, block_size, heads, dh] (GPU).
    """
    if kv.dim() == 4:
        num_blocks, heads, block_size, cell = kv.shape
        paired = kv.view(num_blocks, heads, 2, block_size, cell // 2)  # the CPU kernel's view
        return paired[:, :, KEY_HALF], paired[:, :, VALUE_HALF]
    if kv.dim() == 5 and kv.shape[0] == 2:
        return kv[KEY_HALF].transpose(1, 2), kv[VALUE_HALF].transpose(1, 2)  # strided views
    raise NotImplementedError(
        f"paged caches need vLLM's CPU or FlashAttention page layout, got {tuple(kv.shape)}"
    )


def paged_group(kv_cache_config, model) -> int:
    """The one KV cache group that holds every paged layer (so they share one block table)."""
    names = {n for b in model.blocks for n in (b.attn.layer_name, b.refresh_state.layer_name)}
    groups = [
        i for i, g in enumerate(kv_cache_config.kv_cache_groups) if names & set(g.layer_names)
    ]
    if len(groups) != 1 or not names <= set(kv_cache_config.kv_cache_groups[groups[0]].layer_names):
        raise RuntimeError(f"paged LLaDA layers span KV cache groups {groups}; expected one")
    return groups[0]
