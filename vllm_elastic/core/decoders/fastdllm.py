"""Fast-dLLM (arXiv 2505.22618): block-wise decoding with a prefix or dual KV cache and
confidence-threshold parallel decoding (NVlabs/Fast-dLLM generate.py).

At each block start one full forward refills every layer's K/V and gives the block's first logits.
Inside the block: ``prefix`` recomputes the block and everything after it against the cached prefix;
``dual`` recomputes only the block against the cached prefix and suffix; ``none`` runs a full forward.
Each step commits every masked block position with confidence >= threshold, and at least the best one.
"""

from __future__ import annotations

import numpy as np

from ..commit import SeqResult
from ..config import LLaDAConfig
from ..kv_pool import BlockTable
from ..settings import DecodeSettings
from ..step_batch import SeqPlan
from .base import CanvasState, NoDeferredRefresh


class FastDLLMState(NoDeferredRefresh, CanvasState):
    def __init__(
        self,
        prompt: list[int],
        settings: DecodeSettings,
        cfg: LLaDAConfig,
        device,
        cache: BlockTable | None,
    ):
        super().__init__(prompt, settings, cfg, device)
        self.spans = settings.block_spans()  # (start, end) of each block after the prompt
        self.block, self.block_started = 0, False
        self.cache = cache
        self._candidates = self._all[:0]

    def _block_span(self) -> tuple[int, int]:
        lo, hi = self.spans[self.block]
        return self.canvas.prompt_len + lo, self.canvas.prompt_len + hi

    def _rows(self) -> tuple[np.ndarray, int]:
        """The next step's rows and the layer its full recompute starts at (L: none)."""
        lo, hi = self._block_span()
        if self.cache is None or not self.block_started:
            return self._all, 0
        if self.settings.cache == "prefix":
            return self._all[lo:], self.num_layers
        return self._all[lo:hi], self.num_layers

    def next_rows(self) -> int:
        return 0 if self.done else self._rows()[0].size

    def plan(self) -> SeqPlan:
        lo, hi = self._block_span()
        rows, refresh_from = self._rows()
        c = self.canvas
        self._candidates = lo + np.flatnonzero(c.x[lo:hi] == c.mask_id)  # masked in the block
        return SeqPlan(
            ids=c.x, rows=rows, refresh_from=refresh_from, logit_rows=self._candidates,
            commit=self.threshold_rule(), cache=self.cache, first=self.stats.nfe == 0,
        )

    def advance(self, result: SeqResult) -> None:
        """Commit from the block's masked positions."""
        lo, hi = self._block_span()
        c = self.canvas
        c.x[self._candidates[result.keep]] = result.tokens[result.keep]
        self.record_commit(self._candidates[result.keep], result)
        self.block_started = True
        if not (c.x[lo:hi] == c.mask_id).any():
            self.block, self.block_started = self.block + 1, False
            self.done = self.block == len(self.spans)
        self.done = self.done or (self.settings.early_stop and self.canvas.answered())
        self.end_step()
