"""``PagedLayerCache`` against the core's ``LayerCache``, without an engine.

Two sequences share one set of paged KV tensors (vLLM's CPU page layout), with interleaved blocks; every
other block and every slot past a sequence's end is poisoned with NaN, so a stray read shows up in the
logits and a stray write in the pages. ``forward_plans`` must give bit-identical logits and caches with
either storage, and a refresh from layer l must write layers >= l of its own sequence only (below l:
only the computed rows).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch

from vllm_elastic.core.accounting import ComputeStats
from vllm_elastic.core.cache import LayerCache
from vllm_elastic.core.forward import ElasticProbe, SeqPlan, forward_plans
from vllm_elastic.core.policy import COSINE_OVER_HEADS
from vllm_elastic.plugin.paged_cache import BlocksMoved, PagedStore

BLOCK_SIZE, NUM_BLOCKS = 4, 10
BLOCKS = {"a": [1, 3, 6, 7], "b": [2, 5, 8]}  # 13 and 9 positions; 0, 4, 9 stay free
LENGTHS = {"a": 13, "b": 9}
KINDS = ("k", "v", "q", "x")


def _store(model, layout: str) -> PagedStore:
    """vLLM's KV tensors in the CPU layout, or FlashAttention's (GPU) [2, blocks, block_size, ...]."""
    cfg = model.config

    def pages(heads: int) -> list[torch.Tensor]:
        shape = (NUM_BLOCKS, heads, BLOCK_SIZE, 2 * cfg.head_dim)
        if layout == "flash":
            shape = (2, NUM_BLOCKS, BLOCK_SIZE, heads, cfg.head_dim)
        return [torch.full(shape, float("nan")) for _ in range(cfg.n_layers)]

    return PagedStore.from_pages(pages(cfg.n_kv_heads), pages(cfg.n_heads), cfg.d_model)


def _plan(model, ids, rows, refresh_from, cache, probe=None) -> SeqPlan:
    return SeqPlan(
        ids=ids, rows=rows, refresh_from=refresh_from, logit_rows=rows,
        stats=ComputeStats(model.num_layers), cache=cache, probe=probe,
    )  # fmt: skip


def _snapshot(cache, n_layers: int) -> dict[str, torch.Tensor]:
    return {kind: torch.stack([getattr(cache, kind)[i] for i in range(n_layers)]) for kind in KINDS}


@pytest.mark.parametrize("layout", ["cpu", "flash"])
@torch.inference_mode()
def test_paged_equals_contiguous_and_refresh_writes_only_its_layers(reference_model, layout):
    model = reference_model
    cfg, n_layers = model.config, model.num_layers
    store = _store(model, layout)
    torch.manual_seed(1)
    ids = {s: torch.randint(0, cfg.mask_token_id, (n,)) for s, n in LENGTHS.items()}
    paged = {s: store.cache_for(n, keep_inputs=True) for s, n in LENGTHS.items()}
    for s, cache in paged.items():
        assert cache.bind(BLOCKS[s], BLOCK_SIZE)
    assert not store.cache_for(13, True).bind([1, 2], BLOCK_SIZE)  # 8 slots < 13 positions
    with pytest.raises(BlocksMoved):  # a block in use was swapped: its caches are gone
        paged["b"].bind([2, 4, 8], BLOCK_SIZE)
    dense = {s: LayerCache.allocate(model, n, keep_inputs=True) for s, n in LENGTHS.items()}

    def run(plans_of):
        got = forward_plans(model, [plans_of(s, paged[s]) for s in LENGTHS])
        want = forward_plans(model, [plans_of(s, dense[s]) for s in LENGTHS])
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
        for s in LENGTHS:
            p, d = _snapshot(paged[s], n_layers), _snapshot(dense[s], n_layers)
            for kind in KINDS:
                torch.testing.assert_close(p[kind], d[kind], rtol=0, atol=0)

    full = {s: torch.arange(n) for s, n in LENGTHS.items()}
    run(lambda s, c: _plan(model, ids[s], full[s], 0, c))  # step 0: every layer, every row

    before = {s: _snapshot(paged[s], n_layers) for s in LENGTHS}
    rows = {"a": torch.tensor([2, 7, 11]), "b": torch.tensor([0, 4])}
    refresh = {"a": 1, "b": n_layers}  # a refreshes layers >= 1; b never refreshes
    for s in LENGTHS:
        ids[s][rows[s]] = (ids[s][rows[s]] + 1) % cfg.mask_token_id  # a commit changes the rows

    def probe(s):
        masked = torch.zeros(LENGTHS[s], dtype=torch.bool)
        # window: the last row, tracked: the first (reads q); gamma -1: the drift test never fires
        return ElasticProbe(rows[s][-1:], rows[s][:1], masked, 1, -1.0, COSINE_OVER_HEADS)

    run(lambda s, c: _plan(model, ids[s], rows[s], refresh[s], c, probe(s)))

    for s, n in LENGTHS.items():
        after = _snapshot(paged[s], n_layers)
        kept = torch.ones(n, dtype=torch.bool)
        kept[rows[s]] = False
        for kind in KINDS:
            below = slice(0, refresh[s])  # only the computed rows change below the refresh layer
            torch.testing.assert_close(
                after[kind][below][:, kept], before[s][kind][below][:, kept], rtol=0, atol=0
            )
            assert not torch.equal(after[kind][below][:, ~kept], before[s][kind][below][:, ~kept])
        above = slice(refresh[s] + 1, n_layers)  # past the refresh layer, every row is new
        if refresh[s] + 1 < n_layers:
            assert not torch.equal(after["x"][above][:, kept], before[s]["x"][above][:, kept])
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
