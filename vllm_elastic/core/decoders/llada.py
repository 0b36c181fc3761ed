"""The LLaDA reference sampler (ML-GSAI/LLaDA generate.py), no cache.

Semi-autoregressive blocks of ``block_length``; ``steps // num_blocks`` steps per block; every step one
full bidirectional forward over the canvas; x0 = argmax of Gumbel-noised logits (float64); confidence
``softmax(logits)[x0]`` (low_confidence) or uniform (random); masked positions of the current block compete
and the top ``num_transfer_tokens[step]`` are committed. Decodes all blocks (no early stop at EOS).
"""

from __future__ import annotations

import numpy as np

from .. import policy
from ..commit import SeqResult
from ..config import LLaDAConfig
from ..settings import DecodeSettings
from ..step_batch import CommitRule, SeqPlan
from .base import CanvasState, NoDeferredRefresh


class LLaDAState(NoDeferredRefresh, CanvasState):
    def __init__(self, prompt: list[int], settings: DecodeSettings, cfg: LLaDAConfig, device) -> None:
        super().__init__(prompt, settings, cfg, device)
        self.spans = settings.block_spans()  # (start, end) of each block after the prompt
        self.block_steps = settings.llada_block_steps()  # steps of each block
        self.block, self.step_in_block = 0, 0
        self.schedule: list[int] = []
        self._candidates = self._all[:0]

    def plan(self) -> SeqPlan:
        """A full forward; the masked positions of the current block compete for the commits."""
        s, c = self.settings, self.canvas
        lo, hi = (c.prompt_len + b for b in self.spans[self.block])
        self._candidates = lo + np.flatnonzero(c.x[lo:hi] == c.mask_id)  # [O]
        if self.step_in_block == 0:
            self.schedule = policy.num_transfer_tokens(
                self._candidates.size, self.block_steps[self.block]
            )
        rule = CommitRule(
            top_k=self.schedule[self.step_in_block], temperature=s.temperature,
            random_confidence=s.remasking == "random", generator=self.generator,
            logprobs=s.logprobs,
        )
        return SeqPlan(
            ids=c.x, rows=self._all, refresh_from=0, logit_rows=self._candidates, commit=rule,
            first=self.stats.nfe == 0,
        )

    def advance(self, result: SeqResult) -> None:
        s = self.settings
        self.canvas.x[self._candidates[result.keep]] = result.tokens[result.keep]
        self.record_commit(self._candidates[result.keep], result)
        self.step_in_block += 1
        if self.step_in_block == self.block_steps[self.block]:
            self.block, self.step_in_block = self.block + 1, 0
            self.done = self.block == len(self.spans)
        self.done = self.done or (s.early_stop and self.canvas.answered())
        self.end_step()

    def step_bound(self) -> int:
        """Its schedule: ``steps`` forwards, then it is done."""
        return self.settings.num_steps
