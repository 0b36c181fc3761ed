"""Elastic-Cache decoding as the authors' code does it (llada/generate.py@46c0bc32,
``generate_with_elastic_cache``; research/elastic_cache.md §1.2-1.3).

Step 0 is a full forward that fills every layer's cache. Each later step computes only the rows
``tracked ∪ newly committed ∪ window`` (the window: the W leftmost masked positions) at every layer; at
each layer the tracked rows' attention is compared with what it was (drift test, γ); the first layer whose
similarity falls below γ makes every deeper layer recompute all N rows from the cached layer input. Window
tokens with confidence >= threshold are committed (at least one); the most-attended key of every layer is
tracked next step; positions after the first committed EOS are never decoded.

``refresh_mode="deferred"``: the drift test's trigger only leaves a refresh pending (from l*+1,
the lowest layer if several triggers wait); the step after it is granted (``grant_refresh``)
starts with that refresh. Until then the sequence decodes on its stale cache, and every step it
waits counts in ``stats.refresh_wait_steps``.
"""

from __future__ import annotations

import torch

from .. import policy
from ..cache import CacheFactory, LayerCache
from ..config import LLaDAConfig
from ..forward import ElasticProbe, SeqPlan
from ..settings import DecodeSettings
from .base import CanvasState, DecodeResult, RefreshCost

NO_DRIFT_TEST = -1.0  # a gamma no similarity falls below


class ElasticState(CanvasState):
    def __init__(
        self,
        prompt: list[int],
        settings: DecodeSettings,
        cfg: LLaDAConfig,
        device,
        model,
        cache_factory: CacheFactory = LayerCache.allocate,
    ):
        super().__init__(prompt, settings, cfg, device)
        self.cache = cache_factory(model, self.canvas.length, True)
        n, p = self.canvas.length, self.canvas.prompt_len
        self.masked = torch.arange(p, n, device=device)  # ascending still-masked positions
        self.tracked = torch.zeros(0, dtype=torch.long, device=device)  # most-attended, last step
        self.newdec = torch.zeros(0, dtype=torch.long, device=device)  # committed last step
        self.step, self.eos_seen = 0, False
        self._window = self.masked[:0]
        self._probe: ElasticProbe | None = None
        # deferred mode: the layer a pending refresh starts at (num_layers: none pending), the
        # steps it waited for its grant, and whether it is granted for the next plan()
        self._pending_from = self.num_layers
        self._pending_waited = 0
        self._granted = False

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

    def plan(self) -> SeqPlan:
        s = self.settings
        self._window = policy.sliding_window(self.masked, s.window, s.block_caching)
        still_masked = torch.zeros(self.canvas.length, dtype=torch.bool, device=self._all.device)
        still_masked[self.masked] = True
        if self.step == 0:
            rows, refresh_from, tracked = self._all, 0, self.tracked
        else:
            rows = _ordered_union(self.tracked, self.newdec, self._window)
            refresh_from = 0 if s.refresh == "always" else self._take_granted_refresh()
            tracked = self.tracked
        gamma = s.gamma if s.refresh == "drift" else NO_DRIFT_TEST
        self._probe = ElasticProbe(
            window=self._window, tracked=tracked, still_masked=still_masked,
            track_num=s.track_num, gamma=gamma, cosine=s.cosine,
            defer=s.refresh_mode == "deferred",
        )
        return SeqPlan(
            ids=self.canvas.x, rows=rows, refresh_from=refresh_from,
            logit_rows=self._window[: s.window], stats=self.stats, cache=self.cache,
            probe=self._probe, first=self.step == 0,
        )

    def advance(self, logits: torch.Tensor) -> None:
        """logits: [min(W, |window|), V] for the window rows."""
        s, c = self.settings, self.canvas
        window = self._window[: s.window]
        self.tracked = torch.unique(torch.cat(self._probe.most_attended))  # union over layers
        if self._probe.deferred_from is not None:  # several waiting triggers: the lowest layer
            self._pending_from = min(self._pending_from, self._probe.deferred_from)
        conf, tokens = policy.confidence(logits, s.temperature, self.generator)
        keep = policy.commit_mask(conf, s.threshold, s.tokens_per_step)
        committed, values = window[keep], tokens[keep]
        c.x[committed] = values
        self.record_commit(committed, logits[keep], values)
        self.newdec = committed
        self.masked = self.masked[~torch.isin(self.masked, committed)]
        is_eos = values == c.eos_id
        if not self.eos_seen and bool(is_eos.any()):
            self.eos_seen = True
            first_eos = committed[is_eos].min()
            self.masked = self.masked[self.masked <= first_eos]  # nothing after the first EOS
        self.step += 1
        self.done = self.masked.numel() == 0
        self.done = self.done or (s.early_stop and self.canvas.answered())

    def _take_granted_refresh(self) -> int:
        """The layer this step refreshes from: the pending one if granted, else none (L)."""
        layer = self.num_layers
        if self._granted:
            layer, self._pending_from, self._pending_waited = self._pending_from, self.num_layers, 0
        elif self._pending_from < self.num_layers:
            self._pending_waited += 1
            self.stats.refresh_wait_steps += 1
        self._granted = False
        return layer

    def result(self) -> DecodeResult:
        tokens, eos = self.canvas.generated()
        return DecodeResult(tokens, self.stats, eos)


def _ordered_union(tracked: torch.Tensor, newdec: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Query rows ``tracked, newdec, window`` (the authors' order) without duplicates."""
    tracked = tracked[~torch.isin(tracked, torch.cat([newdec, window]))]
    newdec = newdec[~torch.isin(newdec, window)]
    return torch.cat([tracked, newdec, window])
