"""Elastic-Cache decoding as the authors' code does it (llada/generate.py@46c0bc32,
``generate_with_elastic_cache``).

Step 0 is a full forward that fills every layer's cache. Each later step computes only the rows
``tracked ∪ newly committed ∪ window`` (the window: the W leftmost masked positions) at every layer; at
each layer the tracked rows' attention is compared with what it was (drift test, γ); the first layer whose
similarity falls below γ makes every deeper layer recompute all N rows from the cached layer input. Window
tokens with confidence >= threshold are committed (at least one); the most-attended key of every layer is
tracked next step; positions after the first committed EOS are never decoded.

``refresh_mode="deferred"``: the drift test's trigger only leaves a refresh pending (from l*+1,
or from layer 0 with ``refresh_start="first"``; the lowest layer if several triggers wait); the
step after it is granted (``grant_refresh``)
starts with that refresh. Until then the sequence decodes on its stale cache, and every step it
waits counts in ``stats.refresh_wait_steps``.
"""

from __future__ import annotations

import numpy as np

from .. import policy
from ..commit import SeqResult
from ..config import LLaDAConfig
from ..kv_pool import BlockTable
from ..settings import DecodeSettings
from ..step_batch import Probe, SeqPlan
from .base import CanvasState, RefreshCost

NO_DRIFT_TEST = -1.0  # a gamma no similarity falls below


class ElasticState(CanvasState):
    def __init__(
        self,
        prompt: list[int],
        settings: DecodeSettings,
        cfg: LLaDAConfig,
        device,
        cache: BlockTable,
    ):
        super().__init__(prompt, settings, cfg, device)
        self.cache = cache
        n, p = self.canvas.length, self.canvas.prompt_len
        self.masked = np.arange(p, n)  # ascending still-masked positions
        self.tracked = np.zeros(0, dtype=np.int64)  # most-attended, last step
        self.newdec = np.zeros(0, dtype=np.int64)  # committed last step
        self.step, self.eos_seen = 0, False
        self._window = self.masked[:0]
        # (step, window, query rows) of the next plan: the engine asks next_rows before the step
        # and plan() needs the same arrays; masked, tracked and newdec change only in advance()
        self._next: tuple[int, np.ndarray, np.ndarray] | None = None
        # deferred mode: the layer a pending refresh starts at (num_layers: none pending), the
        # steps it waited for its grant, and whether it is granted for the next plan()
        self._clear_pending()

    def pending_refresh(self) -> RefreshCost | None:
        """The deferred refresh waiting for a grant, or None."""
        if self._pending_from >= self.num_layers:
            return None
        return RefreshCost(
            self.canvas.length, self._pending_from, self.num_layers, self._pending_waited
        )

    def grant_refresh(self) -> None:
        """Let the next ``plan`` run the pending refresh (no-op when none is pending)."""
        self._granted = self._pending_from < self.num_layers

    def _window_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The next step's window and its query rows (every row at step 0), once per step."""
        if self._next is None or self._next[0] != self.step:
            s = self.settings
            window = policy.sliding_window(self.masked, s.window, s.block_caching)
            rows = self._all
            if self.step > 0:
                rows = _ordered_union(self.tracked, self.newdec, window)
            self._next = (self.step, window, rows)
        return self._next[1], self._next[2]

    def next_rows(self) -> int:
        if self.done:
            return 0
        if self._full_refresh():  # every layer recomputes all N rows
            return self.canvas.length
        return self._window_rows()[1].size

    def _full_refresh(self) -> bool:
        """Whether this step recomputes every layer for all N rows from layer 0 (besides step 0)."""
        every = self.settings.full_refresh_every
        return self.settings.refresh == "always" or (every is not None and self.step % every == 0)

    def plan(self) -> SeqPlan:
        s = self.settings
        self._window, rows = self._window_rows()
        if self.step == 0 or self._full_refresh():
            refresh_from = 0
            self._clear_pending()  # a refresh from layer 0 covers any deferred one pending
        else:
            refresh_from = self._take_granted_refresh()
        probe = Probe(
            window=self._window, tracked=self.tracked, still_masked=self.masked,
            track_num=s.track_num, gamma=s.gamma if s.refresh == "drift" else NO_DRIFT_TEST,
            cosine_over_heads=s.cosine == policy.COSINE_OVER_HEADS,
            defer=s.refresh_mode == "deferred",
        )
        return SeqPlan(
            ids=self.canvas.x, rows=rows, refresh_from=refresh_from,
            logit_rows=self._window[: s.window], commit=self.threshold_rule(), cache=self.cache,
            probe=probe, first=self.step == 0,
        )

    def advance(self, result: SeqResult) -> None:
        """Commit from the window rows' logits; track the step's most-attended keys."""
        c = self.canvas
        window = self._window[: self.settings.window]
        attended = result.attended[:, : self.settings.track_num]
        self.tracked = np.unique(attended[attended >= 0])  # union over layers, ascending
        if result.deferred_from < self.num_layers:  # several waiting triggers: the lowest layer
            start = policy.REFRESH_STARTS[self.settings.refresh_start](result.deferred_from)
            self._pending_from = min(self._pending_from, start)
        committed, values = window[result.keep], result.tokens[result.keep]
        c.x[committed] = values
        self.record_commit(committed, result)
        self.newdec = committed
        self.masked = self.masked[~np.isin(self.masked, committed)]
        is_eos = values == c.eos_id
        if not self.eos_seen and is_eos.any():
            self.eos_seen = True
            self.masked = self.masked[self.masked <= committed[is_eos].min()]  # nothing after it
        self.step += 1
        self.done = self.masked.size == 0
        self.done = self.done or (self.settings.early_stop and self.canvas.answered())
        self.end_step()

    def _take_granted_refresh(self) -> int:
        """The layer this step refreshes from: the pending one if granted, else none (L)."""
        layer = self.num_layers
        if self._granted:
            layer = self._pending_from
            self._clear_pending()
        elif self._pending_from < self.num_layers:
            self._pending_waited += 1
            self.stats.refresh_wait_steps += 1
        self._granted = False
        return layer

    def _clear_pending(self) -> None:
        """No deferred refresh pending or granted any more."""
        self._pending_from, self._pending_waited, self._granted = self.num_layers, 0, False


def _ordered_union(tracked: np.ndarray, newdec: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Query rows ``tracked, newdec, window`` (the authors' order) without duplicates."""
    tracked = tracked[~np.isin(tracked, np.concatenate([newdec, window]))]
    newdec = newdec[~np.isin(newdec, window)]
    return np.concatenate([tracked, newdec, window])
