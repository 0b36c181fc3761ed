"""Where a step's rows go in the paged caches, and the write itself.

A page is a view [num_blocks, heads, block_size, dh] of some larger tensor (the core's pool, or the
key or value half of vLLM's KV blocks), and cell (block, head, offset) holds dh contiguous values.
Indexing such a view with (blocks, :, offsets) moves one element at a time; seen as rows of dh
values of its storage, a page takes a write as one ``index_copy_`` of whole rows, about three times
faster on the CPU for the same bytes. The row of a cell depends only on the page's strides, so one
index serves every layer's page of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class CellWrites:
    """The packed rows a step writes into one kind of cache, and their cells (device tensors)."""

    rows: torch.Tensor  # [n] packed row index of every written row, ascending
    blocks: torch.Tensor  # [n] block of its cell
    offsets: torch.Tensor  # [n] offset in the block
    every_row: bool  # rows are all the step's packed rows, in order (nothing to gather)
    _flat: dict = field(default_factory=dict)  # page strides -> [n * heads] storage rows

    def write(self, page: torch.Tensor | None, values: torch.Tensor) -> None:
        """Store values [T, heads * dh] (or [T, heads, dh]) into their cells of ``page``."""
        if page is None or self.rows.numel() == 0:
            return
        src = values if self.every_row else values[self.rows]
        rows_view = _storage_rows(page)
        if rows_view is None:  # a page whose cells are not whole rows of its storage
            page[self.blocks, :, self.offsets] = src.reshape(-1, page.shape[1], page.shape[3])
            return
        rows_view.index_copy_(0, self._flat_rows(page), src.reshape(-1, page.shape[3]))

    def _flat_rows(self, page: torch.Tensor) -> torch.Tensor:
        """[n * heads]: the storage row (dh values each, from the page's origin) of every
        (row, head)."""
        key = (page.shape[1], *page.stride())
        if key not in self._flat:
            dh = page.shape[3]
            heads = torch.arange(page.shape[1], device=self.blocks.device)
            s_block, s_head, s_offset = (s // dh for s in page.stride()[:3])
            start = self.blocks * s_block + self.offsets * s_offset  # [n]
            self._flat[key] = (start[:, None] + heads * s_head).flatten()
        return self._flat[key]


def _storage_rows(page: torch.Tensor) -> torch.Tensor | None:
    """The page's storage from its origin on as rows [rows, dh], or None when its cells are not
    whole, aligned rows of it."""
    dh = page.shape[3]
    if page.stride(3) != 1 or any(s % dh for s in (*page.stride()[:3], page.storage_offset())):
        return None
    total = page.untyped_storage().nbytes() // page.element_size() - page.storage_offset()
    return page.as_strided((total // dh, dh), (dh, 1))
