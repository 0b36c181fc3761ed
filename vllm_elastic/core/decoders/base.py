"""What every decoder state provides, and the result of one decoded sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..accounting import ComputeStats
from ..config import LLaDAConfig
from ..forward import SeqPlan
from ..logprobs import LogprobRecord
from ..settings import DecodeSettings


@dataclass(slots=True)
class DecodeResult:
    """tokens: the canvas after the prompt, cut before the first EOS; stats: the compute that ran."""

    tokens: list[int]
    stats: ComputeStats
    finished_by_eos: bool


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
    done: bool
    logprobs: LogprobRecord | None  # the committed tokens' logprobs, when settings ask for them

    def plan(self) -> SeqPlan: ...

    def advance(self, logits: torch.Tensor) -> None: ...

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
    """The prompt followed by ``gen_length`` masks, and the ids the decoder needs."""

    x: torch.Tensor  # [N]
    prompt_len: int
    mask_id: int
    eos_id: int

    @classmethod
    def new(cls, prompt: list[int], gen_length: int, cfg: LLaDAConfig, device) -> "Canvas":
        ids = torch.tensor(prompt + [cfg.mask_token_id] * gen_length, device=device)
        return cls(x=ids, prompt_len=len(prompt), mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id)

    @property
    def length(self) -> int:
        return self.x.numel()

    def answered(self) -> bool:
        """True once every position up to and including the first EOS is committed: the output can
        no longer change (committed tokens are never remasked)."""
        gen = self.x[self.prompt_len :]  # [G]
        eos = (gen == self.eos_id).nonzero()
        return bool(eos.numel()) and not bool((gen[: int(eos[0])] == self.mask_id).any())

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
    """What every decoder state starts with: its settings, canvas, compute stats and layer count;
    its random generator (seeded by ``settings.seed``: Gumbel noise, random remasking) and, when
    ``settings.logprobs`` asks for it, the record of its committed tokens' logprobs."""

    def __init__(
        self, prompt: list[int], settings: DecodeSettings, cfg: LLaDAConfig, device
    ) -> None:
        self.settings = settings
        self.canvas = Canvas.new(prompt, settings.gen_length, cfg, device)
        self.stats = ComputeStats(cfg.n_layers)
        self.num_layers = cfg.n_layers
        self.done = False
        self._all = torch.arange(self.canvas.length, device=device)  # [N] every position
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.logprobs: LogprobRecord | None = None
        if settings.logprobs is not None:
            self.logprobs = LogprobRecord(settings.logprobs)

    def record_commit(
        self, positions: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor
    ) -> None:
        """Every decoder calls this with what its step committed: canvas positions [R], their
        logits in this step [R, V] and the tokens [R]. A no-op unless logprobs were asked for."""
        if self.logprobs is not None:
            self.logprobs.add(positions, logits, tokens)
