"""The core's batched forward over vLLM's page layout, against the core's own contiguous pool.

Two sequences share one set of paged KV tensors (vLLM's CPU page layout, or FlashAttention's), with
interleaved blocks; every other block and every slot past a sequence's end is poisoned with NaN, so
a stray read shows up in the logits and a stray write in the pages. ``forward_step`` must give
bit-identical logits and caches with either storage, and a refresh from layer l must write layers
>= l of its own sequence only (below l: only the computed rows).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vllm")

import torch

from vllm_elastic.core.forward import forward_step
from vllm_elastic.core.kv_pool import BlockTable, KVPool
from vllm_elastic.core.step_batch import CommitRule, Probe, SeqPlan
from vllm_elastic.plugin.paged_cache import BlocksMoved, PagedStore, bind

BLOCK_SIZE, NUM_BLOCKS = 4, 10
BLOCKS = {"a": [1, 3, 6, 7], "b": [2, 5, 8]}  # 13 and 9 positions; 0, 4, 9 stay free
LENGTHS = {"a": 13, "b": 9}
KINDS = ("keys", "values", "queries", "inputs")


def _store(model, layout: str) -> PagedStore:
    """vLLM's KV tensors in the CPU layout, or FlashAttention's (GPU) [2, blocks, block_size, ...]."""
    cfg = model.config

    def pages(heads: int) -> list[torch.Tensor]:
        shape = (NUM_BLOCKS, heads, BLOCK_SIZE, 2 * cfg.head_dim)
        if layout == "flash":
            shape = (2, NUM_BLOCKS, BLOCK_SIZE, heads, cfg.head_dim)
        return [torch.full(shape, float("nan")) for _ in range(cfg.n_layers)]

    return PagedStore.from_pages(pages(cfg.n_kv_heads), pages(cfg.n_heads), cfg.d_model)


def _plan(ids, rows, refresh_from, cache, probe=None) -> SeqPlan:
    return SeqPlan(
        ids=ids, rows=rows, refresh_from=refresh_from, logit_rows=rows, commit=CommitRule(),
        cache=cache, probe=probe,
    )


def _snapshot(table: BlockTable, n: int) -> dict[str, torch.Tensor]:
    """Every cache of one sequence as [L, n, heads, dh], read cell by cell."""
    pos = torch.arange(n)
    blocks = torch.tensor(table.block_ids)[pos // table.pages.block_size]
    offsets = pos % table.pages.block_size
    return {
        kind: torch.stack([page[blocks, :, offsets] for page in getattr(table.pages, kind)])
        for kind in KINDS
    }


@pytest.mark.parametrize("layout", ["cpu", "flash"])
@torch.inference_mode()
def test_paged_equals_contiguous_and_refresh_writes_only_its_layers(reference_model, layout):
    model = reference_model
    cfg, n_layers = model.config, model.num_layers
    store = _store(model, layout)
    rng = np.random.default_rng(1)
    ids = {s: rng.integers(0, cfg.mask_token_id, n) for s, n in LENGTHS.items()}
    paged = {s: store.table(keep_inputs=True) for s in LENGTHS}
    for s, table in paged.items():
        assert bind(table, BLOCKS[s], BLOCK_SIZE, LENGTHS[s])
    assert not bind(store.table(True), [1, 2], BLOCK_SIZE, 13)  # 8 slots < 13 positions
    with pytest.raises(BlocksMoved):  # a block in use was swapped: its caches are gone
        bind(paged["b"], [2, 4, 8], BLOCK_SIZE, 9)
    pool = KVPool.for_model(model, block_size=BLOCK_SIZE)
    dense = {s: pool.reserve(n, keep_inputs=True) for s, n in LENGTHS.items()}

    def run(plan_of):
        got = forward_step(model, [plan_of(s, paged[s]) for s in LENGTHS], store)
        want = forward_step(model, [plan_of(s, dense[s]) for s in LENGTHS], pool)
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=0)
        for s, n in LENGTHS.items():
            p, d = _snapshot(paged[s], n), _snapshot(dense[s], n)
            for kind in KINDS:
                torch.testing.assert_close(p[kind], d[kind], rtol=0, atol=0)

    full = {s: np.arange(n) for s, n in LENGTHS.items()}
    run(lambda s, c: _plan(ids[s], full[s], 0, c))  # step 0: every layer, every row

    before = {s: _snapshot(paged[s], n) for s, n in LENGTHS.items()}
    rows = {"a": np.array([2, 7, 11]), "b": np.array([0, 4])}
    refresh = {"a": 1, "b": n_layers}  # a refreshes layers >= 1; b never refreshes
    for s in LENGTHS:
        ids[s][rows[s]] = (ids[s][rows[s]] + 1) % cfg.mask_token_id  # a commit changes the rows

    def probe(s):
        # window: the last row, tracked: the first (reads q); gamma -1: the drift test never fires
        return Probe(rows[s][-1:], rows[s][:1], np.zeros(0, np.int64), 1, -1.0, True)

    run(lambda s, c: _plan(ids[s], rows[s], refresh[s], c, probe(s)))

    for s, n in LENGTHS.items():
        after = _snapshot(paged[s], n)
        kept = torch.ones(n, dtype=torch.bool)
        kept[torch.from_numpy(rows[s])] = False
        for kind in KINDS:
            below = slice(0, refresh[s])  # only the computed rows change below the refresh layer
            torch.testing.assert_close(
                after[kind][below][:, kept], before[s][kind][below][:, kept], rtol=0, atol=0
            )
            assert not torch.equal(after[kind][below][:, ~kept], before[s][kind][below][:, ~kept])
        above = slice(refresh[s] + 1, n_layers)  # past the refresh layer, every row is new
        if refresh[s] + 1 < n_layers:
            assert not torch.equal(
                after["inputs"][above][:, kept], before[s]["inputs"][above][:, kept]
            )
    _assert_poison_kept(store)


def _assert_poison_kept(store: PagedStore) -> None:
    """Free blocks and slots past each sequence's end are still NaN: nothing wrote there."""
    used = torch.zeros(NUM_BLOCKS, BLOCK_SIZE, dtype=torch.bool)
    for s, blocks in BLOCKS.items():
        pos = torch.arange(LENGTHS[s])
        used[torch.tensor(blocks)[pos // BLOCK_SIZE], pos % BLOCK_SIZE] = True
    for pages in (store.keys, store.values, store.queries, store.inputs):
        for page in pages:  # [NUM_BLOCKS, heads, BLOCK_SIZE, dh]
            cells = page.transpose(1, 2)  # [NUM_BLOCKS, BLOCK_SIZE, heads, dh]
            assert cells[~used].isnan().all()
            assert not cells[used].isnan().any()
