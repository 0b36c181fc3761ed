"""Fast-dLLM (arXiv 2505.22618): block-wise decoding with a prefix or dual KV cache and
confidence-threshold parallel decoding (research/elastic_cache.md §5.1).

At each block start one full forward refills every layer's K/V and gives the block's first logits.
Inside the block: ``prefix`` recomputes the block and everything after it against the cached prefix;
``dual`` recomputes only the block against the cached prefix and suffix; ``none`` runs a full forward.
Each step commits every masked block position with confidence >= threshold, and at least the best one.
Blocks are ``block_length`` long; the last one is shorter when ``gen_length`` is not a multiple
of it.
"""

from __future__ import annotations

import torch

from .. import policy
from ..cache import CacheFactory, LayerCache
from ..config import LLaDAConfig
from ..forward import SeqPlan
from ..settings import DecodeSettings
from .base import CanvasState, DecodeResult, NoDeferredRefresh


class FastDLLMState(NoDeferredRefresh, CanvasState):
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
        self.spans = settings.block_spans()  # (start, end) of each block after the prompt
        self.block, self.block_started = 0, False
        self.cache = (
            None if settings.cache == "none"
            else cache_factory(model, self.canvas.length, False)
        )

    def _block_span(self) -> tuple[int, int]:
        lo, hi = self.spans[self.block]
        return self.canvas.prompt_len + lo, self.canvas.prompt_len + hi

    def plan(self) -> SeqPlan:
        lo, hi = self._block_span()
        if self.cache is None or not self.block_started:
            rows, refresh_from = self._all, 0
        elif self.settings.cache == "prefix":
            rows, refresh_from = self._all[lo:], self.num_layers
        else:
            rows, refresh_from = self._all[lo:hi], self.num_layers
        return SeqPlan(
            ids=self.canvas.x, rows=rows, refresh_from=refresh_from, logit_rows=self._all[lo:hi],
            stats=self.stats, cache=self.cache, first=self.stats.nfe == 0,
        )

    def advance(self, logits: torch.Tensor) -> None:
        """logits: [hi - lo, V] for the current block."""
        s = self.settings
        lo, hi = self._block_span()
        block = self.canvas.x[lo:hi]  # view
        is_masked = block == self.canvas.mask_id  # [hi - lo]
        conf, tokens = policy.confidence(logits[is_masked], s.temperature, self.generator)
        keep = policy.commit_mask(conf, s.threshold, s.tokens_per_step)
        positions = is_masked.nonzero().squeeze(-1)[keep]  # [C] offsets in the block
        block[positions] = tokens[keep]
        self.record_commit(positions + lo, logits[positions], tokens[keep])
        self.block_started = True
        if not bool((block == self.canvas.mask_id).any()):
            self.block, self.block_started = self.block + 1, False
            self.done = self.block == len(self.spans)
        self.done = self.done or (s.early_stop and self.canvas.answered())

    def result(self) -> DecodeResult:
        tokens, eos = self.canvas.generated()
        return DecodeResult(tokens, self.stats, eos)
