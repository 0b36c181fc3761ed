"""Writing a step's rows into their page cells, against element-wise indexing written here, on
every page layout the engines use: the compiled ``write_cells`` (CPU) and its twin
``write_cells_ref`` (every other device), float32 and bfloat16, values whose rows are strided (v
is a view of the fused projection)."""

from __future__ import annotations

import pytest
import torch
from test_elastic_attention import require_extension

from vllm_elastic.core.page_cells import CellWrites, write_cells_ref

NB, H, BS, DH = 6, 2, 4, 8


def _pages(dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (page [NB, H, BS, DH] view, the tensor it views)."""
    pool = torch.zeros(NB, H, BS, DH, dtype=dtype)
    cpu = torch.zeros(NB, H, BS, 2 * DH, dtype=dtype)  # vLLM's CPU layout: keys then values
    halves = cpu.view(NB, H, 2, BS, DH)
    flash = torch.zeros(2, NB, BS, H, DH, dtype=dtype)  # FlashAttention's: heads inside a row
    raw = torch.zeros(NB * H * BS * DH + 3, dtype=dtype)
    odd = raw[3:].view(NB, H, BS, DH)  # origin off a row start: the twin's element-wise fallback
    return {
        "pool": (pool, pool),
        "cpu keys": (halves[:, :, 0], cpu),
        "cpu values": (halves[:, :, 1], cpu),
        "flash values": (flash[1].transpose(1, 2), flash),
        "unaligned": (odd, raw),
        "query heads of a wider page": (pool[:, :1], pool),
    }


def _kernel(page, blocks, offsets, rows, values) -> None:
    require_extension()
    torch.ops.vllm_elastic.write_cells(page, blocks, offsets, rows, values)


WRITERS = {"kernel": _kernel, "twin": write_cells_ref}


def _case(name: str, dtype: torch.dtype, every_row: bool, strided: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    page, base = _pages(dtype)[name]
    heads = page.shape[1]
    rows_total = 7
    wide = torch.randn(rows_total, 3 * heads * DH, generator=gen).to(dtype)
    # strided: the last third of each row of a wider tensor, as v is of the qkv projection
    values = wide[:, 2 * heads * DH :] if strided else wide[:, : heads * DH].contiguous()
    rows = torch.arange(rows_total) if every_row else torch.tensor([1, 4, 6])
    cells = torch.randperm(NB * BS, generator=gen)[: rows.numel()]
    return page, base, values, rows, cells // BS, cells % BS


def _expected(page, base, values, rows, blocks, offsets) -> torch.Tensor:
    """The same view of a copy, written one (row, head) cell at a time."""
    heads = page.shape[1]
    expected = base.clone()
    exp_page = expected.as_strided(page.shape, page.stride(), page.storage_offset())
    for i, r in enumerate(rows.tolist()):
        for h in range(heads):
            exp_page[blocks[i], h, offsets[i]] = values[r].reshape(heads, DH)[h]
    return expected


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("name", list(_pages(torch.float32)))
@pytest.mark.parametrize("every_row", [True, False], ids=["every row", "some rows"])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided values"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_write_matches_elementwise_indexing(writer, name, every_row, strided, dtype):
    page, base, values, rows, blocks, offsets = _case(name, dtype, every_row, strided)
    expected = _expected(page, base, values, rows, blocks, offsets)
    gather = rows[:0] if every_row else rows  # empty: row i of values goes to cell i
    WRITERS[writer](page, blocks, offsets, gather, values)
    assert torch.equal(base, expected)


@pytest.mark.parametrize("every_row", [True, False], ids=["every row", "some rows"])
def test_cell_writes_go_through_the_op(every_row):
    """``CellWrites.write`` (what the forward calls) writes what the reference does, on the
    device's path (the kernel on the CPU)."""
    page, base, values, rows, blocks, offsets = _case("cpu values", torch.float32, every_row, True)
    expected = _expected(page, base, values, rows, blocks, offsets)
    CellWrites(rows, blocks, offsets, every_row=every_row).write(page, values)
    assert torch.equal(base, expected)


@pytest.mark.parametrize(
    "bad", ["block", "offset", "row", "dtype", "width"], ids=lambda b: f"bad {b}"
)
def test_kernel_refuses_bad_cells_and_writes_nothing(bad):
    page, base, values, rows, blocks, offsets = _case("pool", torch.float32, False, False)
    if bad == "block":
        blocks = blocks.clone()
        blocks[-1] = NB
    elif bad == "offset":
        offsets = offsets.clone()
        offsets[0] = -1
    elif bad == "row":
        rows = rows.clone()
        rows[1] = values.shape[0]
    elif bad == "dtype":
        values = values.double()
    else:
        values = values[:, :DH]
    before = base.clone()
    with pytest.raises(RuntimeError, match="write_cells"):
        _kernel(page, blocks, offsets, rows, values)
    assert torch.equal(base, before)
