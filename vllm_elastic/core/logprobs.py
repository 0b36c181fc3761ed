"""Log-probabilities of committed tokens, taken in the step that commits them.

A diffusion decoder has no left-to-right chain rule: a token is committed from the distribution at
its position in the step that commits it, given the prompt and the canvas of that step (other
positions still masked or already committed). So a token's logprob here is
``log_softmax(logits of its position in that step)[token]``, and its alternatives are the top-k of
the same distribution. Their sum over a sequence is not the sequence's likelihood.

``committed_logprobs`` is the policy (one function of the step's logits and the committed rows),
computed in the batched commit (``commit.py``) for the rows of the requests that asked;
``LogprobRecord`` keeps the results per canvas position (``DecodeSettings.logprobs``; None records
nothing and costs nothing).
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

    @classmethod
    def from_row(cls, row) -> TokenLogprobs:
        """One row of ``pack``: [token, logprob, rank, k ids, k logprobs]."""
        k = (len(row) - 3) // 2
        ids = [int(i) for i in row[3 : 3 + k]]
        return cls(int(row[0]), float(row[1]), int(row[2]), ids, [float(x) for x in row[3 + k :]])


def pack(logits: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """``committed_logprobs`` as one float64 block [R, 3 + 2k] (token, logprob, rank, top ids,
    top logprobs), to travel with a step's other results."""
    lp, rank, top_ids, top_lp = committed_logprobs(logits, tokens, k)
    columns = [tokens[:, None], lp[:, None], rank[:, None], top_ids, top_lp]
    return torch.cat([c.double() for c in columns], dim=1)


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

    def span(self, start: int, end: int) -> list[TokenLogprobs]:
        """The records of canvas positions start .. end - 1, in order (all must be committed)."""
        return [self.by_position[p] for p in range(start, end)]
