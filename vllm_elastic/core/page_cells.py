"""Where a step's rows go in the paged caches, and the write itself.

A page is a view [num_blocks, heads, block_size, dh] of some larger tensor (the core's pool, or the
key or value half of vLLM's KV blocks), and cell (block, head, offset) holds dh contiguous values.
On the CPU one call of the extension's ``write_cells`` copies every cell (``ops.write_cells``).
The twin, elsewhere: indexing such a view with (blocks, :, offsets) moves one element at a time;
seen as rows of dh values of its storage, a page takes a write as one ``index_copy_`` of whole rows,
about three times faster on the CPU for the same bytes. The row of a cell depends only on the
page's strides, so one index serves every layer's page of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import ops


@dataclass(slots=True)
class CellWrites:
    """The packed rows a step writes into one kind of cache, and their cells (device tensors)."""

    rows: torch.Tensor  # [n] packed row index of every written row, ascending
    blocks: torch.Tensor  # [n] block of its cell
    offsets: torch.Tensor  # [n] offset in the block
    every_row: bool  # rows are all the step's packed rows, in order (nothing to gather)
    _flat: dict = field(default_factory=dict)  # page strides -> [n * heads] storage rows
    _gather: torch.Tensor = field(init=False)  # rows, or empty when every row is written in order

    def __post_init__(self) -> None:
        self._gather = self.rows[:0] if self.every_row else self.rows

    def write(self, page: torch.Tensor | None, values: torch.Tensor) -> None:
        """Store values [T, heads * dh] (or [T, heads, dh]) into their cells of ``page``."""
        if page is None or self.rows.numel() == 0:
            return
        ops.write_cells(page, self.blocks, self.offsets, self._gather, values, self._flat)


def write_cells_ref(
    page: torch.Tensor,
    blocks: torch.Tensor,
    offsets: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    flat_cache: dict | None = None,
) -> None:
    """The twin of ``ops.write_cells``: values[rows[i]] (values[i] where ``rows`` is empty), a row
    of heads * dh, into cell (blocks[i], :, offsets[i]) of ``page`` [nb, heads, bs, dh].
    ``flat_cache`` keeps the storage rows of the cells per page strides, for the pages of the
    other layers."""
    src = values[rows] if rows.numel() else values
    rows_view = _storage_rows(page)
    if rows_view is None:  # a page whose cells are not whole rows of its storage
        page[blocks, :, offsets] = src.reshape(-1, page.shape[1], page.shape[3])
        return
    flat = _flat_rows(page, blocks, offsets, {} if flat_cache is None else flat_cache)
    rows_view.index_copy_(0, flat, src.reshape(-1, page.shape[3]))


def _flat_rows(
    page: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor, cache: dict
) -> torch.Tensor:
    """[n * heads]: the storage row (dh values each, from the page's origin) of every (cell,
    head)."""
    key = (page.shape[1], *page.stride())
    if key not in cache:
        dh = page.shape[3]
        heads = torch.arange(page.shape[1], device=blocks.device)
        s_block, s_head, s_offset = (s // dh for s in page.stride()[:3])
        start = blocks * s_block + offsets * s_offset  # [n]
        cache[key] = (start[:, None] + heads * s_head).flatten()
    return cache[key]


def _storage_rows(page: torch.Tensor) -> torch.Tensor | None:
    """The page's storage from its origin on as rows [rows, dh], or None when its cells are not
    whole, aligned rows of it."""
    dh = page.shape[3]
    if page.stride(3) != 1 or any(s % dh for s in (*page.stride()[:3], page.storage_offset())):
        return None
    total = page.untyped_storage().nbytes() // page.element_size() - page.storage_offset()
    return page.as_strided((total // dh, dh), (dh, 1))
