"""One packed forward over a whole batch, each sequence with its own rows, caches and refresh layer.

Per layer the work is the same few ops whatever the number of sequences: one packed QKV projection,
one write per cache for all sequences, one varlen attention call that also yields the Elastic-Cache
statistics of every sequence (``ops.elastic_attention_varlen``), one batched decision
(``ops.elastic_decide``, twin ``policy.decide_layer``), one MLP. A sequence never sees its
neighbours: attention is per sequence.

Each ``SeqPlan`` says which rows to compute from layer 0 and from which layer on every row is
recomputed (``refresh_from``, as ``generate_with_elastic_cache`` does): layers below it compute only
``rows`` and overwrite those rows of the caches; at ``refresh_from`` the sequence switches to its
full cached layer input and refreshes every layer above for all N positions. The drift test may
lower ``refresh_from`` for the layers still to come (``immediate``): the host reads that decision
once per layer, the one host sync inside the forward, and only at layers where a drift test ran
for an immediate-mode sequence. ``deferred`` sequences only record the layer; their forward has
no data-dependent host control flow.

Tensor parallel: ``model`` may hold only a shard of the heads; the statistics are sums over heads,
so each layer's per-shard sums of all sequences go through one ``reduce`` (an all-reduce in the
engine, the identity here) before any decision is taken.

The forward returns what it observed (``StepObservation``) and writes nothing into the plans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import ops
from .kv_pool import Pages
from .model import LLaDAModel
from .step_batch import Layout, SeqPlan, StepBatch

# Sums a float32 tensor over the tensor-parallel group (every rank gets the same sum). The core
# knows nothing of vLLM: an engine that shards the heads passes its all-reduce; alone, the identity.
Reduce = Callable[[torch.Tensor], torch.Tensor]


def no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(slots=True)
class StepObservation:
    """What one forward observed, on the device until ``commit`` packs it for the host.

    logits: [O, V] float32 of every sequence's logit rows, packed in plan order;
    attended: [L, R, track_num] most-attended positions per layer (NONE where no probe);
    refresh_from: [R] host, the layer each sequence recomputed every row from (L: none);
    deferred_from: [R] the layer a deferred trigger asks the next refresh to start at (L: none);
    rows_computed: [R] host, rows computed summed over layers;
    similarity: [L, R] float64 drift similarity (NaN: not tested).
    """

    logits: torch.Tensor
    logit_counts: np.ndarray
    attended: torch.Tensor
    refresh_from: np.ndarray
    deferred_from: torch.Tensor
    rows_computed: np.ndarray
    similarity: torch.Tensor


def forward_step(
    model: LLaDAModel, plans: list[SeqPlan], pages: Pages | None, reduce: Reduce = no_reduce
) -> StepObservation:
    """Run one packed forward for every plan (see the module docstring)."""
    device = next(model.parameters()).device
    batch = StepBatch(plans, pages, device)
    num_layers = model.num_layers
    probes = _ProbeState(batch, num_layers, device)
    lay = batch.layout(batch.all_rows, 0)
    rope = model.rotary(lay.pos)  # the rows' RoPE (they change only where a refresh starts)
    h = model.embed(batch.ids)  # [T, d]
    rows_computed = np.zeros(batch.num_seqs, dtype=np.int64)
    for layer, block in enumerate(model.blocks):
        lay.qx_write.write(pages.inputs[layer] if pages else None, h)
        target = batch.full_at(layer)
        if (target != lay.full).any():  # a refresh starts here: every row, from the cached inputs
            new = batch.layout(target, layer)
            h = _relayout(h, pages.inputs[layer], batch.relayout(lay, new), new)
            lay = new
            rope = model.rotary(lay.pos)
        rows_computed += lay.counts
        q, k, v = block.project_qkv(h, rope)  # [T, H, dh], [T, Hkv, dh] (this rank's heads)
        prev_q = probes.previous_queries(pages, layer, q)  # [R, K, H, dh]
        o, mass, heads_part, keys_part = ops.elastic_attention_varlen(
            q, k, v, lay.seq, lay.pos, lay.cu_rows, lay.max_rows,
            pages.keys[layer] if pages else k[:0, :, None], pages.values[layer] if pages else
            v[:0, :, None], batch.block_tables, batch.seq_lens, batch.max_len, lay.reads_cache,
            lay.window, lay.tracked if probes.any_tested else lay.tracked[:, :0], prev_q,
        )
        if pages is not None:
            lay.kv_write.write(pages.keys[layer], k)
            lay.kv_write.write(pages.values[layer], v)
            lay.qx_write.write(pages.queries[layer] if pages.queries else None, q)
        probes.observe(layer, mass, heads_part, keys_part, reduce)
        h = block.finish(h, o.flatten(-2))
    logits = model.logits(h[lay.logit_index])  # [O, V]
    return StepObservation(
        logits=logits,
        logit_counts=np.array([p.logit_rows.shape[0] for p in plans]),
        attended=probes.attended,
        refresh_from=batch.refresh_from,
        deferred_from=probes.deferred_from,
        rows_computed=rows_computed,
        similarity=probes.similarity,
    )


def _relayout(h: torch.Tensor, inputs: torch.Tensor, moves, new: Layout) -> torch.Tensor:
    """The rows of the new layout: kept rows as they are, the rows of sequences starting their
    refresh from the cached layer inputs ([nb, H, bs, d / H] pages). h: [T, d] -> [T', d]."""
    keep_old, keep_new, rows, blocks, offsets = moves
    out = h.new_empty(new.pos.shape[0], h.shape[1])  # [T', d]
    out[keep_new] = h[keep_old]
    out[rows] = inputs[blocks, :, offsets].flatten(1)
    return out


class _ProbeState:
    """The Elastic-Cache decisions of one forward, batched over sequences (device tensors)."""

    def __init__(self, batch: StepBatch, num_layers: int, device) -> None:
        self.batch, self.num_layers = batch, num_layers
        plans, r = batch.plans, batch.num_seqs
        probes = [p.probe for p in plans]
        self.any_probe = bool(batch.has_probe.any())
        self.any_tested = self.any_probe and batch.tracked_pos.shape[1] > 0
        # a sequence is tested where it has tracked rows and cached queries, on later steps
        ok = [
            pr is not None and pr.tracked.size > 0 and not p.first and p.cache is not None
            and p.cache.keep_inputs for p, pr in zip(plans, probes)
        ]
        self.can_test = np.array(ok)
        self.immediate = np.array([pr is not None and not pr.defer for pr in probes])
        dev = batch.to_device
        self.can_test_dev = dev(self.can_test)
        self.defer = dev(~self.immediate & batch.has_probe)
        self.gamma = dev(np.array([pr.gamma if pr else 0.0 for pr in probes], dtype=np.float64))
        over_heads = np.array([pr.cosine_over_heads if pr else True for pr in probes])
        self.over_heads = dev(over_heads)
        # one mode for the whole batch (the usual case): only that cosine is computed
        self.over_heads_all = int(over_heads[0]) if (over_heads == over_heads[0]).all() else -1
        self.track_num = dev(np.array([pr.track_num if pr else 0 for pr in probes]))
        self.still_masked = batch.still_masked() if self.any_probe else None
        # masks the statistics need at every layer, fixed for the step (none without a probe)
        self.key_invalid = self.kept = self.pair_invalid = self.pair_count = None
        if self.any_probe:
            key_valid = torch.arange(batch.max_len, device=device)[None] < batch.seq_lens[:, None]
            self.key_invalid = ~key_valid  # [R, N]
            width = min(batch.track_num, batch.max_len)
            self.kept = torch.arange(width, device=device)[None, :] < self.track_num[:, None]
            if self.any_tested:
                tracked_valid = dev(batch.tracked_pos >= 0)  # [R, K]
                pair_valid = tracked_valid[:, :, None] & key_valid[:, None, :]  # [R, K, N]
                self.pair_invalid = ~pair_valid
                self.pair_count = pair_valid.sum((1, 2)).clamp_min(1)  # [R]
            else:  # no drift test in this step: empty pair masks (the attention's K = 0)
                n = batch.max_len
                self.pair_invalid = torch.zeros(r, 0, n, dtype=torch.bool, device=device)
                self.pair_count = torch.ones(r, dtype=torch.long, device=device)
        self.refresh_from = dev(batch.refresh_from)  # [R] lowered by immediate triggers
        self.deferred_from = torch.full((r,), num_layers, dtype=torch.long, device=device)
        # per layer, as decided ([R, width] and [R]); stacked once the forward is done
        self._attended: list[torch.Tensor] = []
        self._similarity: list[torch.Tensor] = []
        self.cells = batch.tracked_cells() if self.any_tested else None

    @property
    def attended(self) -> torch.Tensor:
        """[L, R, track_num] the most-attended positions of every layer (-1: absent)."""
        shape = (self.num_layers, self.batch.num_seqs, self.batch.track_num)
        if not self._attended:
            return torch.full(shape, -1, dtype=torch.long, device=self.batch.device)
        out = torch.stack(self._attended)  # [L, R, width], width = min(track_num, max_len)
        return torch.nn.functional.pad(out, (0, shape[2] - out.shape[2]), value=-1)

    @property
    def similarity(self) -> torch.Tensor:
        """[L, R] float64 every layer's drift similarity (NaN: not tested)."""
        if not self._similarity:
            shape = (self.num_layers, self.batch.num_seqs)
            return torch.full(shape, torch.nan, dtype=torch.float64, device=self.batch.device)
        return torch.stack(self._similarity)

    def previous_queries(self, pages: Pages | None, layer: int, q: torch.Tensor) -> torch.Tensor:
        """The tracked rows' queries as the previous step stored them: [R, K, H, dh]."""
        if not self.any_tested or pages is None or not pages.queries:
            return q.new_zeros(self.batch.num_seqs, 0, q.shape[1], q.shape[2])
        blocks, offsets = self.cells
        return pages.queries[layer][blocks, :, offsets]  # [R, K, H, dh]

    def observe(self, layer, mass, heads_part, keys_part, reduce: Reduce) -> None:
        """Sum the statistics over all ranks' heads (one reduce), then decide for every sequence
        (``ops.elastic_decide``: the most-attended keys and the drift test, one call).

        COLLECTIVE: one ``reduce`` per layer for all sequences (none when no sequence has a
        probe): R N window-mass values plus the drift partials (3 R K N + 2 R).
        """
        if not self.any_probe:
            return
        if reduce is not no_reduce:  # one collective for the three partials
            sizes = [mass.numel(), heads_part.numel(), keys_part.numel()]
            flat = reduce(torch.cat([mass.flatten(), heads_part.flatten(), keys_part.flatten()]))
            mass, heads_part, keys_part = flat.split(sizes)
        r, n = self.batch.num_seqs, self.batch.max_len
        k = self.batch.tracked_pos.shape[1] if self.any_tested else 0
        attended, similarity, self.refresh_from, self.deferred_from = ops.elastic_decide(
            mass.view(r, n), heads_part.view(3, r, k, n), keys_part.view(2, r),
            self.still_masked, self.key_invalid, self.kept, self.pair_invalid, self.pair_count,
            self.over_heads, self.over_heads_all, self.can_test_dev, self.defer, self.gamma,
            self.refresh_from, self.deferred_from, layer, self.num_layers,
        )
        self._attended.append(attended)
        self._similarity.append(similarity)
        if not self.any_tested:
            return
        may_fire = self.can_test & self.immediate & (self.batch.refresh_from > layer + 1)
        if layer + 1 < self.num_layers and may_fire.any():
            # HOST SYNC (immediate mode): the next layer's rows depend on this decision (a
            # sequence's refresh layer only ever drops to the layer after a trigger)
            self.batch.refresh_from = self.refresh_from.cpu().numpy().copy()
