"""One step's plan for a whole batch: built once on the host from sizes, moved to the device once.

A decoder describes its sequence's part of the step as a ``SeqPlan`` of host arrays (numpy): the
positions it computes, the layer from which it recomputes every position, the rows whose logits it
commits from, its cache and its Elastic-Cache probe. ``StepBatch`` packs all of them into flat
tensors (``Layout``): the rows of every sequence one after another, with their positions, pages and
the indices the statistics need. The layout changes only where a sequence starts recomputing every
row (its refresh layer); the forward then asks for a new one (``StepBatch.layout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .kv_pool import BlockTable, Pages
from .page_cells import CellWrites

NONE = -1  # an absent entry of a padded index


@dataclass(slots=True)
class Probe:
    """What the Elastic-Cache policy reads from attention in one forward (host positions)."""

    window: np.ndarray  # [W] positions whose attention mass picks the most-attended keys
    tracked: np.ndarray  # [K] positions whose attention drift is tested
    still_masked: np.ndarray  # positions that cannot be most-attended
    track_num: int
    gamma: float
    cosine_over_heads: bool
    defer: bool = False  # deferred mode: a drift trigger is reported, the refresh runs later


@dataclass(slots=True)
class CommitRule:
    """How a sequence commits from its logit rows (``commit.py``).

    ``top_k`` set: the ``top_k`` most confident rows (0: none); None: every row with confidence
    >= min(threshold, max confidence). ``temperature`` > 0: the token is the Gumbel-noised argmax
    and its confidence the unnoised probability (LLaDA; Fast-dLLM's ``get_transfer_index``), drawn
    with ``generator``; ``random_confidence``: uniform confidences (LLaDA's ``random`` remasking).
    """

    threshold: float = 1.0
    top_k: int | None = None
    temperature: float = 0.0
    random_confidence: bool = False
    generator: torch.Generator | None = None
    logprobs: int | None = None  # record logprobs with this many alternatives (-1: all; None: off)

    @property
    def sampled(self) -> bool:
        return self.temperature > 0 or self.random_confidence


@dataclass(slots=True)
class SeqPlan:
    """One sequence's part of a step (built by its decoder, read by the batched forward)."""

    ids: np.ndarray  # [N] the canvas
    rows: np.ndarray  # [T] positions computed at the layers below refresh_from
    refresh_from: int  # first layer computing all N rows (0: a full forward; L: none)
    logit_rows: np.ndarray  # [O] positions whose logits the commit reads
    commit: CommitRule
    cache: BlockTable | None = None  # None: no cache (rows must then be all positions)
    probe: Probe | None = None
    first: bool = False  # the sequence's first forward (not counted as a refresh)

    @property
    def length(self) -> int:
        return self.ids.shape[0]

    @property
    def all_rows(self) -> bool:
        return self.rows.shape[0] == self.length


@dataclass(slots=True)
class Layout:
    """The packed rows of one stretch of layers (device tensors unless noted)."""

    full: np.ndarray  # bool [R] host: the sequence computes all its positions
    pos: torch.Tensor  # [T] position of every row
    seq: torch.Tensor  # [T] its sequence
    cu_rows: torch.Tensor  # [R + 1] row offsets
    max_rows: int
    counts: np.ndarray  # [R] host: rows per sequence
    reads_cache: torch.Tensor  # bool [R]: keys not computed in this step come from the pages
    window: torch.Tensor  # [R, W] row indices (NONE: absent)
    tracked: torch.Tensor  # [R, K] row indices
    kv_write: CellWrites  # the rows whose sequence keeps K/V, and their cells
    qx_write: CellWrites  # the same for queries and layer inputs
    logit_index: torch.Tensor  # [O] row index of every logit row


class StepBatch:
    """Host facts of a step's sequences and their device tensors that do not change per layer."""

    def __init__(self, plans: list[SeqPlan], pages: Pages | None, device) -> None:
        self.plans, self.pages, self.device = plans, pages, device
        self.num_seqs = len(plans)
        self.lengths = np.array([p.length for p in plans], dtype=np.int64)  # [R]
        self.max_len = int(self.lengths.max())
        self.block_size = pages.block_size if pages is not None else 1
        self.has_cache = np.array([p.cache is not None for p in plans])
        self.keeps_inputs = np.array([p.cache is not None and p.cache.keep_inputs for p in plans])
        self.refresh_from = np.array([p.refresh_from for p in plans], dtype=np.int64)
        self.all_rows = np.array([p.all_rows for p in plans])  # planned rows cover the canvas
        tables = _pad([np.asarray(p.cache.block_ids if p.cache else [], np.int64) for p in plans])
        self.tables_np = np.maximum(tables, 0)  # [R, max_blocks]
        self.block_tables = self.to_device(self.tables_np)
        self.seq_lens = self.to_device(self.lengths)
        probes = [p.probe for p in plans]
        self.has_probe = np.array([pr is not None for pr in probes])
        self.tracked_pos = _pad([pr.tracked if pr is not None else _EMPTY for pr in probes])
        self.window_pos = _pad([pr.window if pr is not None else _EMPTY for pr in probes])
        self.track_num = max([pr.track_num for pr in probes if pr is not None], default=0)
        # the ids of the first layout's rows (in its order: a sequence computing every position
        # packs them by position, whatever the order of its planned rows)
        first = [p.ids if p.all_rows else p.ids[p.rows] for p in plans]
        self.ids = self.to_device(np.concatenate(first))  # [T0]

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))  # shares a's memory, as .to(cpu) would
        return t if self.device.type == "cpu" else t.to(self.device)

    def full_at(self, layer: int) -> np.ndarray:
        """bool [R]: sequences computing all positions at ``layer``."""
        return self.all_rows | (self.refresh_from <= layer)

    def layout(self, full: np.ndarray, layer: int) -> Layout:
        """Pack every sequence's rows: all positions where ``full``, else its planned rows.

        A sequence reads its cache unless it refreshes from ``layer`` or below: also when its
        planned rows cover the canvas, since the drift test's "before" reads the cached keys
        (the step's rows then override every position for the attention itself)."""
        rows = [np.arange(p.length) if f else p.rows for p, f in zip(self.plans, full)]
        counts = np.array([r.shape[0] for r in rows], dtype=np.int64)
        cu = np.concatenate([[0], np.cumsum(counts)])  # [R + 1]
        pos = np.concatenate(rows)  # [T]
        seq = np.repeat(np.arange(self.num_seqs), counts)  # [T]
        # index of (sequence, position) in the packed rows, NONE where not computed
        where = np.full((self.num_seqs, self.max_len), NONE, dtype=np.int64)
        where[seq, pos] = np.arange(pos.shape[0])
        logit = np.concatenate([where[s, p.logit_rows] for s, p in enumerate(self.plans)])
        if (logit < 0).any():
            raise RuntimeError("a logit row was not computed in this forward")
        return Layout(
            full=full,
            pos=self.to_device(pos),
            seq=self.to_device(seq),
            cu_rows=self.to_device(cu),
            max_rows=int(counts.max()),
            counts=counts,
            reads_cache=self.to_device(self.has_cache & (self.refresh_from > layer)),
            window=self.to_device(_lookup(where, self.window_pos)),
            tracked=self.to_device(_lookup(where, self.tracked_pos)),
            kv_write=self._writes(pos, seq, self.has_cache[seq]),
            qx_write=self._writes(pos, seq, self.keeps_inputs[seq]),
            logit_index=self.to_device(logit),
        )

    def relayout(self, old: Layout, new: Layout):
        """Row indices for moving to ``new``: (kept rows in ``old``, the same rows in ``new``, rows
        of ``new`` that start their refresh, their blocks, their offsets)."""
        switch = new.full & ~old.full  # [R]
        old_cu = np.concatenate([[0], np.cumsum(old.counts)])
        new_cu = np.concatenate([[0], np.cumsum(new.counts)])
        kept = [s for s in range(self.num_seqs) if not switch[s]]
        moved = [s for s in range(self.num_seqs) if switch[s]]
        keep_old = _ranges(old_cu, kept, new.counts)
        keep_new = _ranges(new_cu, kept, new.counts)
        rows = _ranges(new_cu, moved, new.counts)
        pos = np.concatenate([np.arange(self.plans[s].length) for s in moved] or [_EMPTY])
        seq = np.repeat(moved, new.counts[moved]) if moved else _EMPTY
        blocks = self.tables_np[seq, pos // self.block_size]
        return tuple(
            self.to_device(a) for a in (keep_old, keep_new, rows, blocks, pos % self.block_size)
        )

    def _writes(self, pos: np.ndarray, seq: np.ndarray, keep: np.ndarray) -> CellWrites:
        """The packed rows whose sequence keeps this cache, and their cells."""
        rows = np.nonzero(keep)[0]
        p, s = pos[rows], seq[rows]
        blocks = self.tables_np[s, p // self.block_size]
        return CellWrites(
            self.to_device(rows), self.to_device(blocks), self.to_device(p % self.block_size),
            every_row=rows.shape[0] == pos.shape[0],
        )

    def tracked_cells(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks and offsets of every tracked position [R, K] (absent ones: cell (0, 0))."""
        pos = np.maximum(self.tracked_pos, 0)
        rows = np.arange(self.num_seqs)[:, None]
        blocks = np.where(self.tracked_pos >= 0, self.tables_np[rows, pos // self.block_size], 0)
        return self.to_device(blocks), self.to_device(pos % self.block_size)

    def still_masked(self) -> torch.Tensor:
        """bool [R, max_len]: keys that cannot be most-attended."""
        out = np.zeros((self.num_seqs, self.max_len), dtype=bool)
        for s, p in enumerate(self.plans):
            if p.probe is not None:
                out[s, p.probe.still_masked] = True
        return self.to_device(out)


_EMPTY = np.zeros(0, dtype=np.int64)


def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    """Ragged 1-d int arrays -> [len, max] padded with NONE."""
    width = max([a.shape[0] for a in arrays], default=0)
    out = np.full((len(arrays), width), NONE, dtype=np.int64)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def _ranges(cu: np.ndarray, seqs: list[int], counts: np.ndarray) -> np.ndarray:
    """The packed row indices of ``seqs`` (each ``counts[s]`` rows from ``cu[s]``)."""
    parts = [np.arange(cu[s], cu[s] + counts[s]) for s in seqs]
    return np.concatenate(parts) if parts else _EMPTY


def _lookup(where: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Row indices of padded positions [R, W] (NONE stays NONE)."""
    rows = np.arange(where.shape[0])[:, None]
    found = where[rows, np.maximum(positions, 0)]
    out = np.where(positions >= 0, found, NONE)
    if ((positions >= 0) & (found < 0)).any():
        raise RuntimeError("a probed position was not computed in this forward")
    return out
