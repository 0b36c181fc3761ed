"""The commit of one step for every sequence at once, and the one copy of its results to the host.

Every method commits from its logit rows by one of two rules (``CommitRule``): the threshold rule
of Fast-dLLM and Elastic-Cache (every row with confidence >= min(threshold, max confidence), so at
least the best one) or the top-k rule (LLaDA's transfer schedule; Elastic/Fast-dLLM's
``tokens_per_step``). Confidences are float64 softmax maxima, as the reference code takes them.
Both rules run over all sequences' rows in one padded ``[R, O]`` layout, then the step's results
(tokens, commits, most-attended keys, deferred triggers, drift similarities) go to the host in one
device-to-host copy.

Sampled decoding (LLaDA ``temperature`` > 0 or ``random`` remasking) draws each request's noise
from its own generator, so that a seed reproduces a request whatever its neighbours: one draw per
sampled request, the only per-request device work of a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import policy
from .forward import StepObservation
from .logprobs import pack
from .step_batch import SeqPlan


@dataclass(slots=True)
class SeqResult:
    """One sequence's share of a step's results (host arrays)."""

    keep: np.ndarray  # bool [O] which logit rows were committed
    tokens: np.ndarray  # [O] the token of every logit row
    attended: np.ndarray  # [L, track_num] most-attended positions per layer (-1: none)
    deferred_from: int  # deferred mode: the layer the next refresh starts at (L: none)
    refresh_from: int  # the layer this step recomputed every row from (L: none)
    rows_computed: int  # rows computed, summed over layers
    similarity: np.ndarray  # [L] drift similarity per layer (NaN: not tested)
    logprobs: np.ndarray | None = None  # [O, 3 + 2k] ``logprobs.pack`` rows, when asked for


def commit(obs: StepObservation, plans: list[SeqPlan], mask_id: int) -> list[SeqResult]:
    """Apply every sequence's commit rule to its logit rows; one host copy of all results.

    The token committed is never ``mask_id`` (``policy.forbid_mask``)."""
    logits, counts = obs.logits, obs.logit_counts  # [O, V], [R]
    device, num_seqs = logits.device, len(plans)
    conf, tokens = policy.confidence(logits, mask_id)  # [O] float64, [O]
    starts = np.concatenate([[0], np.cumsum(counts)])
    for s, plan in enumerate(plans):
        if plan.commit.sampled:
            lo, hi = int(starts[s]), int(starts[s + 1])
            conf[lo:hi], tokens[lo:hi] = _sampled(logits[lo:hi], plan, mask_id)
    seg = torch.from_numpy(np.repeat(np.arange(num_seqs), counts)).to(device)  # [O]
    local = torch.from_numpy(np.arange(int(starts[-1])) - np.repeat(starts[:-1], counts))
    local = local.to(device)
    rules = [p.commit for p in plans]
    threshold = torch.tensor([r.threshold for r in rules], dtype=torch.float64, device=device)
    top_k = torch.tensor([-1 if r.top_k is None else r.top_k for r in rules], device=device)
    keep = policy.commit_batched(conf, seg, local, num_seqs, int(max(counts, default=0)),
                                 threshold, top_k)  # bool [O]
    logprob_rows, k = _logprob_rows(logits, tokens, plans, starts)
    packed = torch.cat([
        keep.double(), tokens.double(), obs.attended.double().flatten(),
        obs.deferred_from.double(), obs.similarity.flatten(), logprob_rows.flatten(),
    ]).cpu().numpy()  # HOST SYNC: the one copy of the step's results
    results = _unpack(packed, obs, counts, num_seqs)
    _attach_logprobs(results, packed[-logprob_rows.numel() or len(packed) :], plans, k)
    return results


def _logprob_rows(logits, tokens, plans: list[SeqPlan], starts: np.ndarray):
    """The logprob rows of every sequence that asked for them, in one call: [rows, 3 + 2k]."""
    asked = [s for s, p in enumerate(plans) if p.commit.logprobs is not None]
    if not asked:
        return logits.new_zeros(0, dtype=torch.float64), 0
    vocab = logits.shape[-1]
    k = max(vocab if plans[s].commit.logprobs < 0 else plans[s].commit.logprobs for s in asked)
    k = min(k, vocab)
    index = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in asked])
    rows = torch.from_numpy(index).to(logits.device)
    return pack(logits[rows], tokens[rows], k), k


def _attach_logprobs(results, flat: np.ndarray, plans: list[SeqPlan], k: int) -> None:
    """Give each asking sequence its rows, cut to its own number of alternatives."""
    if not any(p.commit.logprobs is not None for p in plans):
        return
    table = flat.reshape(-1, 3 + 2 * k)
    at = 0
    for result, plan in zip(results, plans):
        want = plan.commit.logprobs
        if want is None:
            continue
        own = k if want < 0 else min(want, k)
        rows = table[at : at + result.keep.shape[0]]
        result.logprobs = np.concatenate([rows[:, : 3 + own], rows[:, 3 + k : 3 + k + own]], 1)
        at += result.keep.shape[0]


def _sampled(
    logits: torch.Tensor, plan: SeqPlan, mask_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA's sampled x0 and its confidence (generate.py): Gumbel-noised argmax (never MASK),
    then softmax(logits)[x0] (low_confidence) or a uniform draw (random)."""
    rule = plan.commit
    noisy = policy.add_gumbel_noise(logits, rule.temperature, rule.generator)  # [O, V]
    x0 = policy.forbid_mask(noisy, mask_id).argmax(-1)  # [O]
    if rule.random_confidence:
        conf = torch.rand(
            x0.shape, dtype=torch.float64, generator=rule.generator, device=x0.device
        )
    else:
        conf = torch.softmax(logits.double(), dim=-1).gather(-1, x0[:, None]).squeeze(-1)
    return conf, x0


def _unpack(packed: np.ndarray, obs: StepObservation, counts: np.ndarray, num_seqs: int):
    total = int(counts.sum())
    num_layers, _, width = obs.attended.shape
    keep = packed[:total] > 0
    tokens = packed[total : 2 * total].astype(np.int64)
    at = 2 * total
    attended = packed[at : at + obs.attended.numel()].astype(np.int64)
    attended = attended.reshape(num_layers, num_seqs, width)
    at += obs.attended.numel()
    deferred = packed[at : at + num_seqs].astype(np.int64)
    at += num_seqs
    similarity = packed[at : at + num_layers * num_seqs].reshape(num_layers, num_seqs)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [
        SeqResult(
            keep=keep[starts[s] : starts[s + 1]],
            tokens=tokens[starts[s] : starts[s + 1]],
            attended=attended[:, s],
            deferred_from=int(deferred[s]),
            refresh_from=int(obs.refresh_from[s]),
            rows_computed=int(obs.rows_computed[s]),
            similarity=similarity[:, s],
        )
        for s in range(num_seqs)
    ]
