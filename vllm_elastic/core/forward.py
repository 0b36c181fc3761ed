"""One packed forward over many sequences, each with its own rows, caches and refresh layer.

The rows of every sequence are concatenated for the projections and the MLP (one matmul for the whole
batch); attention runs per sequence over that sequence's keys only, so a sequence never sees its
neighbours. Each ``SeqPlan`` says which rows to compute from layer 0 (``rows``) and from which layer on
every row is recomputed (``refresh_from``, research/elastic_cache.md §1.3): layers below it compute
only ``rows`` and overwrite those rows of the caches; at ``refresh_from`` the sequence switches to its
full cached layer input and refreshes every layer above for all N positions. The Elastic-Cache statistics
(most-attended keys from the window rows, the tracked rows' drift) are taken here too, and the drift test
may lower ``refresh_from`` for the layers still to come.

Tensor parallel: ``model`` may hold only a shard of the heads (q [T, H/tp, dh]); the statistics are
sums over heads, so each layer's per-shard sums of all sequences go through one ``reduce`` (an
all-reduce in the engine, the identity here) before any decision is taken (``_decide``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import ops
from . import policy
from .accounting import ComputeStats
from .cache import LayerCache
from .model import LLaDAModel


@dataclass(slots=True)
class ElasticProbe:
    """What the Elastic-Cache policy reads from attention in one forward (filled by the decoder)."""

    window: torch.Tensor  # [W] positions whose attention mass picks the most-attended keys
    tracked: torch.Tensor  # [R] positions whose attention drift is tested
    still_masked: torch.Tensor  # bool [N]: keys excluded from the most-attended choice
    track_num: int
    gamma: float
    cosine: str
    defer: bool = False  # deferred mode: a drift trigger is reported, the refresh runs next step
    # filled by forward_plans:
    deferred_from: int | None = None  # deferred mode: the layer the next step refreshes from
    most_attended: list[torch.Tensor] = field(default_factory=list)  # per layer [track_num]
    similarity: list[float] = field(default_factory=list)  # per tested layer


@dataclass(slots=True)
class SeqPlan:
    """One sequence's part of a packed forward (built by a decoder, read by ``forward_plans``)."""

    ids: torch.Tensor  # [N] the canvas
    rows: torch.Tensor  # [T] positions computed at the layers below refresh_from
    refresh_from: int  # first layer computing all N rows (0: a full forward; L: none)
    logit_rows: torch.Tensor  # [O] positions whose logits are returned
    stats: ComputeStats
    cache: LayerCache | None = None  # None: no cache (rows must then be all positions)
    probe: ElasticProbe | None = None
    first: bool = False  # the sequence's first forward (not counted as a refresh)


# Sums a float32 tensor over the tensor-parallel group (every rank gets the same sum). The core
# knows nothing of vLLM: an engine that shards the heads passes its all-reduce; alone, the identity.
Reduce = Callable[[torch.Tensor], torch.Tensor]


def no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(slots=True)
class _LayerStats:
    """One sequence's Elastic statistics at one layer, summed over this rank's heads only."""

    plan: SeqPlan
    mass: torch.Tensor  # [N] window mass (policy.attention_mass_partial)
    drift: torch.Tensor | None  # policy.drift_partials, flat; None: no drift test at this layer


def forward_plans(
    model: LLaDAModel, plans: list[SeqPlan], reduce: Reduce = no_reduce
) -> list[torch.Tensor]:
    """Run one forward for every plan; returns logits [O, V] per plan (float32).

    ``reduce`` sums the head-sharded Elastic statistics over the tensor-parallel group, once per
    layer for all sequences (``_decide``), so that every rank takes the same decisions.
    """
    num_layers = model.num_layers
    full = [torch.arange(p.ids.numel(), device=p.ids.device) for p in plans]
    cur = [p.rows for p in plans]  # the positions of the rows of h, per plan
    h = [model.embed(p.ids[r]) for p, r in zip(plans, cur)]  # each [T_i, d]
    tables = [model.rotary(f) for f in full]  # (cos, sin) [N_i, dh]
    for layer, block in enumerate(model.blocks):
        for i, p in enumerate(plans):
            h[i], cur[i] = _layer_input(p, layer, h[i], cur[i], full[i])
            p.stats.rows_computed += cur[i].numel()
        cos = torch.cat([t[0][r] for t, r in zip(tables, cur)])  # [T, dh]
        sin = torch.cat([t[1][r] for t, r in zip(tables, cur)])
        hcat = torch.cat(h)  # [T, d]
        q, k, v = block.project_qkv(hcat, cos, sin)  # [T, H, dh], [T, Hkv, dh] (this rank's heads)
        sizes = [r.numel() for r in cur]
        outs, stats = [], []
        for p, qi, ki, vi, cur_i in zip(plans, q.split(sizes), k.split(sizes), v.split(sizes), cur):
            o, st = _attend_one(p, layer, qi, ki, vi, cur_i)
            outs.append(o)
            stats += [st] if st is not None else []
        _decide(stats, layer, reduce)
        hcat = block.finish(hcat, torch.cat(outs))
        h = list(hcat.split(sizes))
    rows = []
    for p, hi, r in zip(plans, h, cur):
        p.stats.nfe += 1
        p.stats.rows_nocache += p.ids.numel() * num_layers
        rows.append(hi[_locate(r, p.logit_rows)])  # [O_i, d]
    # NOTE: one LM head call for the batch: under TP one gather of the vocab shards per step.
    logits = model.logits(torch.cat(rows))  # [sum O_i, V]
    return list(logits.split([p.logit_rows.numel() for p in plans]))


def _layer_input(p: SeqPlan, layer: int, h, rows, full):
    """Store the layer input of computed rows; switch to the full cached input at refresh_from."""
    x = p.cache.x if p.cache is not None else None
    if layer > p.refresh_from or torch.equal(rows, full):
        if x is not None:
            x[layer] = h
        return h, rows
    if x is None:
        if layer == p.refresh_from:
            raise ValueError("a refresh from a middle layer needs the cached layer inputs")
        return h, rows
    x[layer, rows] = h
    if layer == p.refresh_from:
        return x[layer].clone(), full  # [N, d]: fresh query rows, stale others
    return h, rows


def _attend_one(p: SeqPlan, layer: int, q, k, v, rows) -> tuple[torch.Tensor, _LayerStats | None]:
    """Attention of one sequence's rows over its N keys, and its statistics for the probe.

    q: [T, H, dh], k, v: [T, Hkv, dh] of this layer's computed rows (positions ``rows``). One
    ``ops.elastic_attention`` call reads the other positions' K/V where the cache keeps them (in
    place, from vLLM's pages in the engine) and yields the window mass and the drift partials; this
    step's q, K and V are stored afterwards (so the drift test's "before" reads the old ones).
    """
    probe, cache = p.probe, p.cache
    refreshing = layer >= p.refresh_from  # every row, fresh K/V: nothing read from the cache
    if refreshing and not p.first:
        p.stats.refreshes[layer] += 1
    testing = (  # no drift test while refreshing, nor after a deferred trigger
        not refreshing
        and probe is not None
        and probe.deferred_from is None
        and probe.tracked.numel() > 0
        and cache is not None
        and cache.q is not None
    )
    none = rows[:0]
    window = _locate(rows, probe.window) if probe is not None else none  # [W] indices into rows
    tracked = _locate(rows, probe.tracked) if testing else none  # [R]
    prev_q = cache.q[layer, probe.tracked] if testing else q[:0]  # [R, H, dh] before this step
    key_pages, value_pages, table = _pages(cache, layer, k)
    o, mass, drift = ops.elastic_attention(
        q, k, v, rows, key_pages, value_pages, table, p.ids.numel(), window, tracked, prev_q,
        probe is None or probe.cosine == policy.COSINE_OVER_HEADS,
    )  # o [T, H, dh], mass [N], drift [3, R, N] | [2] | empty
    if cache is not None:
        cache.k[layer, rows], cache.v[layer, rows] = k, v
        if cache.q is not None:
            cache.q[layer, rows] = q
    o = o.flatten(-2)  # [T, H*dh]
    if probe is None:
        return o, None
    return o, _LayerStats(p, mass, drift.flatten() if testing else None)


def _pages(cache: LayerCache | None, layer: int, k: torch.Tensor):
    """The layer's K/V pages and block table; without a cache every row is new (nothing read)."""
    if cache is not None:
        return cache.kv_pages(layer)
    empty = k.new_empty(0, k.shape[1], 1, k.shape[2])  # [0 blocks, Hkv, 1, dh]
    return empty, empty, torch.zeros(0, dtype=torch.long, device=k.device)


def _decide(stats: list[_LayerStats], layer: int, reduce: Reduce) -> None:
    """Sum every sequence's statistics over the heads of all ranks, then take the decisions.

    COLLECTIVE: one ``reduce`` per layer (none when no sequence has a probe), one flat float32
    tensor for all sequences of the packed forward: per sequence N window-mass values, plus the
    drift partials where the drift is tested (``head`` cosine: 3 R N, ``key`` cosine: 2), R the
    tracked rows. E.g. N = 512, R = 1: 8 KiB per sequence and layer. Every rank then decides from
    the same sums (an all-reduce hands all ranks one result), so the most-attended keys and the
    refresh layer agree across ranks.
    """
    if not stats:
        return
    parts = [t for st in stats for t in (st.mass, st.drift) if t is not None]
    summed = reduce(torch.cat(parts)).split([t.numel() for t in parts])  # flat [sum sizes]
    it = iter(summed)
    for st in stats:
        probe, p = st.plan.probe, st.plan
        score = policy.mask_attended(next(it), probe.still_masked)  # [N]
        probe.most_attended.append(policy.most_attended(score, probe.track_num))
        if st.drift is None:
            continue
        sim = policy.drift_from_partials(next(it), probe.cosine)
        probe.similarity.append(sim)
        if sim >= probe.gamma:
            continue
        if probe.defer:  # deferred: the next step refreshes layers l*+1 .. L-1 (the scheduler's turn)
            probe.deferred_from = layer + 1
        elif p.refresh_from > layer + 1:
            p.refresh_from = layer + 1  # immediate: layers l*+1 .. L-1 refresh every row (§1.3 item 5)


def _locate(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Indices of ``positions`` inside ``rows`` (every position must be present)."""
    if rows.numel() == 0 or positions.numel() == 0:
        return positions.new_zeros(0)
    lookup = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long, device=rows.device)
    lookup[rows] = torch.arange(rows.numel(), device=rows.device)
    index = lookup[positions]
    if (index < 0).any():
        raise RuntimeError("a requested position was not computed in this forward")
    return index
