"""One request on the worker: its core decoder state and what of its canvas was handed to vLLM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.decoders.base import DecodeState
from ..core.kv_pool import BlockTable
from ..core.logprobs import TokenLogprobs


@dataclass(slots=True)
class RequestDecode:
    """One request on the worker: its core decoder state and how much of it was handed out."""

    state: DecodeState | None  # None: the request was rejected here (error set)
    prompt_len: int
    eos_id: int
    mask_id: int
    emitted: int = 0  # generated tokens handed to vLLM so far
    finished: bool = False  # the EOS or the canvas end was handed out
    error: str | None = None
    cache: BlockTable | None = None  # the state's caches in this request's KV blocks
    step_limited: bool = False  # its decode ended at the step bound before the canvas was filled
    wants_logprobs: bool = False  # the request asked for logprobs (its state records them)
    added_eos: int = 0  # an EOS that take_committed added to end the request (1) or not (0)
    waited: int = 0  # steps it was ready but left out for the token budget, in a row

    @property
    def left(self) -> int:
        """Generated positions not handed out yet."""
        return self.state.canvas.length - self.prompt_len - self.emitted

    def take_committed(self) -> list[int]:
        """Tokens that extend the contiguous committed prefix since the last call (EOS included)."""
        self.added_eos = 0
        if self.finished:
            return []
        if self.state is None:
            self.finished, self.added_eos = True, 1
            return [self.eos_id]  # the scheduler stops the request on the model's EOS
        canvas = self.state.canvas  # every core decoder keeps its canvas as ``canvas`` (host)
        rest = canvas.x[self.prompt_len + self.emitted :]  # [G - emitted]
        masked = np.flatnonzero(rest == self.mask_id)
        new = rest[: masked[0] if masked.size else rest.shape[0]].tolist()
        if self.eos_id in new:
            new = new[: new.index(self.eos_id) + 1]
            self.finished = True
        self.emitted += len(new)
        self.finished = self.finished or self.emitted == canvas.length - self.prompt_len
        if self.state.done and not self.finished:  # the step bound ended it: nothing more comes
            self.finished = self.step_limited = True
        return new

    def logprobs_of(self, tokens: list[int]) -> list[TokenLogprobs] | None:
        """The records of ``tokens``, just taken by ``take_committed``; None if none were asked.

        An EOS the runner added to end a request gets logprob 0 and no alternatives: no step
        committed it.
        """
        if not self.wants_logprobs:
            return None
        decoded = len(tokens) - self.added_eos
        end = self.prompt_len + self.emitted
        entries = self.state.logprobs.span(end - decoded, end) if decoded else []
        return entries + [TokenLogprobs(self.eos_id, 0.0, 1, [], [])] * self.added_eos
