"""``CellWrites.write`` against element-wise indexing, on every page layout the engines use."""

from __future__ import annotations

import pytest
import torch

from vllm_elastic.core.page_cells import CellWrites

NB, H, BS, DH = 6, 2, 4, 8


def _pages() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (page [NB, H, BS, DH] view, the tensor it views)."""
    pool = torch.zeros(NB, H, BS, DH)
    cpu = torch.zeros(NB, H, BS, 2 * DH)  # vLLM's CPU layout: a cell's keys then its values
    halves = cpu.view(NB, H, 2, BS, DH)
    flash = torch.zeros(2, NB, BS, H, DH)  # FlashAttention's layout, heads inside a block row
    raw = torch.zeros(NB * H * BS * DH + 3)
    odd = raw[3:].view(NB, H, BS, DH)  # origin off a row start: the element-wise fallback
    return {
        "pool": (pool, pool),
        "cpu keys": (halves[:, :, 0], cpu),
        "cpu values": (halves[:, :, 1], cpu),
        "flash values": (flash[1].transpose(1, 2), flash),
        "unaligned": (odd, raw),
        "query heads of a wider page": (pool[:, :1], pool),
    }


@pytest.mark.parametrize("name", list(_pages()))
@pytest.mark.parametrize("every_row", [True, False])
def test_write_matches_elementwise_indexing(name, every_row):
    gen = torch.Generator().manual_seed(0)
    page, base = _pages()[name]
    heads = page.shape[1]
    rows_total = 7
    values = torch.randn(rows_total, heads * DH, generator=gen)
    rows = torch.arange(rows_total) if every_row else torch.tensor([1, 4, 6])
    cells = torch.randperm(NB * BS, generator=gen)[: rows.numel()]
    blocks, offsets = cells // BS, cells % BS
    # the reference: the same view of a copy, written one (row, head) cell at a time
    expected = base.clone()
    exp_page = expected.as_strided(page.shape, page.stride(), page.storage_offset())
    for i, r in enumerate(rows.tolist()):
        for h in range(heads):
            exp_page[blocks[i], h, offsets[i]] = values[r].view(heads, DH)[h]
    CellWrites(rows, blocks, offsets, every_row=every_row).write(page, values)
    assert torch.equal(base, expected)
