"""What every decoder state provides, and the result of one decoded sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..accounting import ComputeStats
from ..commit import SeqResult
from ..config import LLaDAConfig
from ..kv_pool import BlockTable
from ..logprobs import LogprobRecord, TokenLogprobs
from ..settings import DecodeSettings
from ..step_batch import CommitRule, SeqPlan


@dataclass(slots=True)
class DecodeResult:
    """tokens: the canvas after the prompt, cut before the first EOS (or the first position still
    masked); stats: the compute that ran; step_limited: the decode was ended by its step bound
    (``CanvasState.max_steps``) with positions still masked."""

    tokens: list[int]
    stats: ComputeStats
    finished_by_eos: bool
    step_limited: bool = False


@dataclass(slots=True, frozen=True)
class RefreshCost:
    """A deferred refresh waiting for its grant: every one of ``rows`` rows at layers >= ``from_layer``.

    ``waited``: steps it has already waited past the first one it could have run in (0: reported
    by the last step). An engine's scheduler grants the oldest first, within a token budget.
    """

    rows: int  # N, the canvas length
    from_layer: int  # l: layers l .. L-1 are recomputed for all N rows
    num_layers: int  # L
    waited: int = 0

    @property
    def layer_rows(self) -> int:
        """N * (L - l): the rows the refresh computes, summed over layers."""
        return self.rows * (self.num_layers - self.from_layer)

    @property
    def token_rows(self) -> int:
        """The refresh in token rows (one token row = one row through all L layers), rounded up."""
        return -(-self.layer_rows // self.num_layers)


class DecodeState(Protocol):
    """One sequence being decoded. ``plan`` says what to compute next; ``advance`` commits tokens.

    Deferred refresh (``refresh_mode="deferred"``): a drift trigger leaves a refresh pending on the
    state (``pending_refresh``) until ``grant_refresh`` is called; the next ``plan`` then runs it.
    ``core.generate.step`` grants every pending refresh at the next step; an engine grants them
    within a budget, and an ungranted sequence keeps decoding with its stale cache.
    """

    settings: DecodeSettings
    stats: ComputeStats
    canvas: "Canvas"  # the prompt and the generated positions (masks until committed)
    cache: BlockTable | None  # where the state's caches live (None: no cache)
    done: bool
    steps_taken: int  # advance() calls so far
    max_steps: int  # the step bound: done at the latest after this many steps
    step_limited: bool  # done at the bound with positions of the answer still masked
    logprobs: LogprobRecord | None  # the committed tokens' logprobs, when settings ask for them

    def plan(self) -> SeqPlan: ...

    def next_rows(self) -> int: ...

    def advance(self, result: SeqResult) -> None: ...

    def result(self) -> DecodeResult: ...

    def pending_refresh(self) -> RefreshCost | None: ...

    def grant_refresh(self) -> None: ...


class NoDeferredRefresh:
    """The deferred-refresh interface of a decoder that never defers a refresh."""

    def pending_refresh(self) -> RefreshCost | None:
        return None

    def grant_refresh(self) -> None:
        pass


@dataclass(slots=True)
class Canvas:
    """The prompt followed by ``gen_length`` masks, and the ids the decoder needs (host memory:
    the device sees only the rows a step computes)."""

    x: np.ndarray  # [N]
    prompt_len: int
    mask_id: int
    eos_id: int

    @classmethod
    def new(cls, prompt: list[int], gen_length: int, cfg: LLaDAConfig) -> "Canvas":
        ids = np.array(prompt + [cfg.mask_token_id] * gen_length, dtype=np.int64)
        return cls(x=ids, prompt_len=len(prompt), mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id)

    @property
    def length(self) -> int:
        return self.x.shape[0]

    def answered(self) -> bool:
        """True once every position up to and including the first EOS is committed: the output can
        no longer change (committed tokens are never remasked)."""
        gen = self.x[self.prompt_len :]  # [G]
        eos = np.flatnonzero(gen == self.eos_id)
        return eos.size > 0 and not (gen[: eos[0]] == self.mask_id).any()

    def incomplete(self) -> bool:
        """True while a position before the first EOS (or anywhere, without one) is masked."""
        gen = self.x[self.prompt_len :]  # [G]
        eos = np.flatnonzero(gen == self.eos_id)
        answer = gen[: eos[0]] if eos.size else gen  # [<= G]
        return bool((answer == self.mask_id).any())

    def generated(self) -> tuple[list[int], bool]:
        """Generated ids up to (not including) the first EOS; leftover masks count as the end."""
        out = []
        for t in self.x[self.prompt_len :].tolist():
            if t == self.eos_id:
                return out, True
            if t == self.mask_id:
                break
            out.append(t)
        return out, False


class CanvasState:
    """What every decoder state starts with: its settings, canvas, compute stats and layer count,
    and the step bound every decode ends by.

    NOTE: the bound makes every decode end whatever the model does. Each step of ``fastdllm``
    and ``elastic`` commits at least one masked position (the threshold rule keeps the most
    confident one, top-k keeps k >= 1, and ``policy.forbid_mask`` never lets MASK be the token
    committed), so ``gen_length`` steps fill the canvas: there are no refresh-only steps (a
    refresh runs inside a step that also commits). ``llada`` runs exactly its schedule. A normal
    decode is therefore done by the bound; reaching it with masks left means the progress
    guarantee was broken, and the decode ends anyway (``step_limited``). ``settings.max_steps``
    lowers the bound (an operator's cap on the work one request may take).
    """

    def __init__(
        self, prompt: list[int], settings: DecodeSettings, cfg: LLaDAConfig, device
    ) -> None:
        self.settings = settings
        self.canvas = Canvas.new(prompt, settings.gen_length, cfg)
        self.stats = ComputeStats(cfg.n_layers)
        self.num_layers = cfg.n_layers
        self.done = False
        self.cache: BlockTable | None = None
        self._all = np.arange(self.canvas.length)  # [N] every position
        self.steps_taken = 0
        self.max_steps = self.step_bound()
        if settings.max_steps is not None:
            self.max_steps = min(self.max_steps, settings.max_steps)
        self.step_limited = False
        # random draws (Gumbel noise, random remasking), seeded per request: reproducible alone
        # or batched
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.logprobs: LogprobRecord | None = None
        if settings.logprobs is not None:
            self.logprobs = LogprobRecord(settings.logprobs)

    def record_commit(self, positions: np.ndarray, result: SeqResult) -> None:
        """Keep the logprobs of the rows ``result`` committed (at canvas ``positions``), when the
        settings asked for them (computed in the batched commit, ``commit.py``)."""
        if self.logprobs is None or result.logprobs is None:
            return
        for pos, row in zip(positions.tolist(), result.logprobs[result.keep]):
            self.logprobs.by_position[pos] = TokenLogprobs.from_row(row)

    def step_bound(self) -> int:
        """The most steps the method takes on this canvas: one masked position filled per step."""
        return self.settings.gen_length

    def next_rows(self) -> int:
        """The token rows the next ``plan`` computes (all N here; 0 once done), known before it
        runs and without changing the state: what an engine's scheduler books for the step. A
        refresh adds rows at its layers only: a deferred one is booked when it is granted
        (``RefreshCost``), an immediate one is decided inside the step."""
        return 0 if self.done else self.canvas.length

    def end_step(self) -> None:
        """Count the step that ``advance`` just finished; at the bound, the decode is done."""
        self.steps_taken += 1
        if self.steps_taken >= self.max_steps:
            self.done = True
            self.step_limited = self.canvas.incomplete()

    def result(self) -> DecodeResult:
        tokens, eos = self.canvas.generated()
        return DecodeResult(tokens, self.stats, eos, self.step_limited)

    def threshold_rule(self) -> CommitRule:
        """Fast-dLLM's and Elastic-Cache's rule, or the fixed top-k when ``tokens_per_step``."""
        s = self.settings
        return CommitRule(
            threshold=s.threshold, top_k=s.tokens_per_step, temperature=s.temperature,
            generator=self.generator, logprobs=s.logprobs,
        )
