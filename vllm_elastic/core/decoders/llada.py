"""The LLaDA reference sampler (ML-GSAI/LLaDA generate.py, research/elastic_cache.md §4.1), no cache.

Semi-autoregressive blocks of ``block_length``; ``steps // num_blocks`` steps per block; every step one
full bidirectional forward over the canvas; x0 = argmax of Gumbel-noised logits (float64); confidence
``softmax(logits)[x0]`` (low_confidence) or uniform (random); masked positions of the current block compete
and the top ``num_transfer_tokens[step]`` are committed. Decodes all blocks (no early stop at EOS).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import policy
from ..commit import SeqResult
from ..config import LLaDAConfig
from ..settings import DecodeSettings
from ..step_batch import CommitRule, SeqPlan
from .base import CanvasState, NoDeferredRefresh


class LLaDAState(NoDeferredRefresh, CanvasState):
    def __init__(self, prompt: list[int], settings: DecodeSettings, cfg: LLaDAConfig, device) -> None:
        super().__init__(prompt, settings, cfg)
        self.num_blocks = settings.gen_length // settings.block_length
        self.steps_per_block = settings.num_steps // self.num_blocks
        self.block, self.step_in_block = 0, 0
        self.schedule: list[int] = []
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self._candidates = self._all[:0]

    def plan(self) -> SeqPlan:
        """A full forward; the masked positions of the current block compete for the commits."""
        s, c = self.settings, self.canvas
        lo = c.prompt_len + self.block * s.block_length
        hi = lo + s.block_length
        self._candidates = lo + np.flatnonzero(c.x[lo:hi] == c.mask_id)  # [O]
        if self.step_in_block == 0:
            self.schedule = policy.num_transfer_tokens(
                self._candidates.size, self.steps_per_block
            )
        rule = CommitRule(
            top_k=self.schedule[self.step_in_block], temperature=s.temperature,
            random_confidence=s.remasking == "random", generator=self.generator,
        )
        return SeqPlan(
            ids=c.x, rows=self._all, refresh_from=0, logit_rows=self._candidates, commit=rule,
            first=self.stats.nfe == 0,
        )

    def advance(self, result: SeqResult) -> None:
        s = self.settings
        self.canvas.x[self._candidates[result.keep]] = result.tokens[result.keep]
        self.step_in_block += 1
        if self.step_in_block == self.steps_per_block:
            self.block, self.step_in_block = self.block + 1, 0
            self.done = self.block == self.num_blocks
        self.done = self.done or (s.early_stop and self.canvas.answered())
        self.end_step()

    def step_bound(self) -> int:
        """Its schedule: ``steps`` forwards, then it is done."""
        return self.settings.num_steps
