"""The LLaDA reference sampler (ML-GSAI/LLaDA generate.py, research/elastic_cache.md §4.1), no cache.

Semi-autoregressive blocks of ``block_length`` (the last one shorter when ``gen_length`` is not a
multiple of it); ``steps`` shared over the blocks in proportion to their length
(``DecodeSettings.llada_block_steps``: ``steps // num_blocks`` each when every block is whole);
every step one full bidirectional forward over the canvas; x0 = argmax of Gumbel-noised logits
(float64); confidence ``softmax(logits)[x0]`` (low_confidence) or uniform (random); masked
positions of the current block compete and the top ``num_transfer_tokens[step]`` are committed.
Decodes all blocks (no early stop at EOS).
"""

from __future__ import annotations

import torch

from .. import policy
from ..config import LLaDAConfig
from ..forward import SeqPlan
from ..settings import DecodeSettings
from .base import CanvasState, DecodeResult, NoDeferredRefresh


class LLaDAState(NoDeferredRefresh, CanvasState):
    def __init__(self, prompt: list[int], settings: DecodeSettings, cfg: LLaDAConfig, device) -> None:
        super().__init__(prompt, settings, cfg, device)
        self.spans = settings.block_spans()  # (start, end) of each block after the prompt
        self.block_steps = settings.llada_block_steps()  # steps of each block
        self.block, self.step_in_block = 0, 0
        self.schedule: list[int] = []

    def plan(self) -> SeqPlan:
        p = self.canvas.prompt_len
        return SeqPlan(
            ids=self.canvas.x, rows=self._all, refresh_from=0, logit_rows=self._all[p:],
            stats=self.stats, first=self.stats.nfe == 0,
        )

    def advance(self, logits: torch.Tensor) -> None:
        """logits: [G, V] for the generated positions."""
        s, c = self.settings, self.canvas
        gen = c.x[c.prompt_len :]  # [G] view into the canvas
        lo, hi = self.spans[self.block]
        steps = self.block_steps[self.block]
        is_masked = gen == c.mask_id  # [G]
        if self.step_in_block == 0:
            self.schedule = policy.num_transfer_tokens(int(is_masked[lo:hi].sum()), steps)
        noisy = policy.add_gumbel_noise(logits, s.temperature, self.generator)
        x0 = noisy.argmax(dim=-1)  # [G]
        if s.remasking == "low_confidence":
            probs = torch.softmax(logits.double(), dim=-1)  # [G, V]
            x0_conf = probs.gather(-1, x0[:, None]).squeeze(-1)  # [G]
        else:
            x0_conf = torch.rand(
                x0.shape, dtype=torch.float64, generator=self.generator, device=x0.device
            )
        x0_conf[hi:] = -torch.inf  # only the current block competes
        conf = torch.where(is_masked, x0_conf, torch.full_like(x0_conf, -torch.inf))
        chosen = torch.topk(conf, self.schedule[self.step_in_block]).indices
        gen[chosen] = x0[chosen]
        self.record_commit(chosen + c.prompt_len, logits[chosen], x0[chosen])
        self.step_in_block += 1
        if self.step_in_block == steps:
            self.block, self.step_in_block = self.block + 1, 0
            self.done = self.block == len(self.spans)
        self.done = self.done or (s.early_stop and self.canvas.answered())

    def result(self) -> DecodeResult:
        tokens, eos = self.canvas.generated()
        return DecodeResult(tokens, self.stats, eos)
