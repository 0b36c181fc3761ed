"""Log-probabilities of committed tokens, taken in the step that commits them.

A diffusion decoder has no left-to-right chain rule: a token is committed from the distribution at
its position in the step that commits it, given the prompt and the canvas of that step (other
positions still masked or already committed). So a token's logprob here is
``log_softmax(logits of its position in that step)[token]``, and its alternatives are the top-k of
the same distribution. Their sum over a sequence is not the sequence's likelihood.

``committed_logprobs`` is the policy (one function of the step's logits and the committed rows);
``LogprobRecord`` keeps its results per canvas position for a request that asked for them
(``DecodeSettings.logprobs``; None records nothing and costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True, frozen=True)
class TokenLogprobs:
    """One committed token: its logprob, its rank (1 = the most likely) and the top-k."""

    token: int
    logprob: float
    rank: int
    top_ids: list[int]
    top_logprobs: list[float]


def committed_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits: [R, V] of the committed rows in this step; tokens: [R] committed there.

    Returns (logprob [R], rank [R], top_ids [R, k], top_logprobs [R, k]), in float32 as vLLM's
    sampler computes them. rank: 1 + the number of tokens strictly more likely.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [R, V]
    chosen = logp.gather(-1, tokens[:, None].long())  # [R, 1]
    rank = (logp > chosen).sum(dim=-1) + 1  # [R]
    top_lp, top_ids = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)  # [R, k] each
    return chosen.squeeze(-1), rank, top_ids, top_lp


@dataclass(slots=True)
class LogprobRecord:
    """The committed tokens' logprobs of one sequence, keyed by canvas position."""

    k: int  # top alternatives kept per token (-1: the whole vocabulary)
    by_position: dict[int, TokenLogprobs] = field(default_factory=dict)

    def add(self, positions: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        """positions: [R] canvas positions committed this step; logits: [R, V]; tokens: [R]."""
        if positions.numel() == 0:
            return
        k = self.k if self.k >= 0 else logits.shape[-1]
        lp, rank, top_ids, top_lp = committed_logprobs(logits, tokens, k)
        rows = zip(
            positions.tolist(), tokens.tolist(), lp.tolist(), rank.tolist(),
            top_ids.tolist(), top_lp.tolist(),
        )
        for pos, tok, value, r, ids, lps in rows:
            self.by_position[pos] = TokenLogprobs(tok, value, r, ids, lps)

    def span(self, start: int, end: int) -> list[TokenLogprobs]:
        """The records of canvas positions start .. end - 1, in order (all must be committed)."""
        return [self.by_position[p] for p in range(start, end)]
