"""The policy pieces shared by the reference decoders and the vLLM runner.

Each function is one decision of research/elastic_cache.md: commit rule (§1.3 item 7), window (§1.3 item
1), most-attended selection (item 3), drift similarity (item 4), LLaDA's transfer schedule and Gumbel
noise (§4.1). The decoders and the engine call these; nothing re-implements them.
"""

from __future__ import annotations

import torch

COSINE_OVER_HEADS = "head"  # the authors' code: F.cosine_similarity(Sprev, Snow, dim=1) on [B, H, R, N]
COSINE_OVER_KEYS = "key"  # the paper's text: cosine of each attention row over the keys, per head
COSINE_MODES = (COSINE_OVER_HEADS, COSINE_OVER_KEYS)
COSINE_EPS = 1e-8  # F.cosine_similarity's default: norms below it are clamped


def confidence(
    logits: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's token and its softmax probability, in float64. logits: [R, V] -> conf [R],
    tokens [R].

    Temperature 0: the most likely token. Otherwise the token is the argmax of the Gumbel-noised
    logits (``add_gumbel_noise``) and its confidence the unnoised probability, as Fast-dLLM's
    ``get_transfer_index`` does.
    """
    probs = torch.softmax(logits.double(), dim=-1)  # [R, V]
    if temperature == 0:
        conf, tokens = probs.max(dim=-1)
        return conf, tokens
    tokens = add_gumbel_noise(logits, temperature, generator).argmax(dim=-1)  # [R]
    return probs.gather(-1, tokens[:, None]).squeeze(-1), tokens


def threshold_commit(conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM's rule: every position with conf >= threshold, and always the most confident one.

    conf: [R] -> bool [R]. Equal to ``conf >= min(threshold, conf.max())`` (generate.py@46c0bc32).
    """
    if conf.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=conf.device)
    return conf >= torch.clamp(conf.max(), max=threshold)


def topk_commit(conf: torch.Tensor, k: int) -> torch.Tensor:
    """The fixed-rate rule (``threshold=None, tokens_per_iter=k`` in the authors' code): the k most
    confident positions. conf: [R] -> bool [R]."""
    keep = torch.zeros_like(conf, dtype=torch.bool)
    keep[torch.topk(conf, min(k, conf.numel())).indices] = True
    return keep


def commit_mask(conf: torch.Tensor, threshold: float, tokens_per_step: int | None) -> torch.Tensor:
    """The commit rule of a step: fixed top-k when ``tokens_per_step`` is set, else the threshold rule."""
    if tokens_per_step is not None:
        return topk_commit(conf, tokens_per_step)
    return threshold_commit(conf, threshold)


def sliding_window(masked: torch.Tensor, window: int, block_caching: bool) -> torch.Tensor:
    """The query window: the W leftmost still-masked positions, or all of them without block caching.

    masked: ascending positions [M] -> [min(W, M)] or [M].
    """
    return masked[:window] if block_caching else masked


def attention_mass(window_probs: torch.Tensor, still_masked: torch.Tensor) -> torch.Tensor:
    """Mass each key receives from the window rows, summed over heads and rows; masked keys get 0.

    window_probs: [H, W, N]; still_masked: bool [N] -> score [N].
    """
    return mask_attended(attention_mass_partial(window_probs), still_masked)


def attention_mass_partial(window_probs: torch.Tensor) -> torch.Tensor:
    """The mass summed over this shard's heads and the window rows: [H, W, N] -> [N].

    NOTE: a sum over heads, so tensor-parallel shards add their partials (core/forward.py reduces).
    """
    return window_probs.sum(dim=(0, 1))  # [N]


def mask_attended(score: torch.Tensor, still_masked: torch.Tensor) -> torch.Tensor:
    """Masked keys cannot be most-attended. score: [N], still_masked: bool [N] -> [N]."""
    return score.masked_fill(still_masked, 0.0)


def most_attended(score: torch.Tensor, track_num: int) -> torch.Tensor:
    """Positions of the top ``track_num`` keys by attention mass. score: [N] -> [track_num]."""
    return torch.topk(score, min(track_num, score.numel())).indices


def drift_similarity(prev: torch.Tensor, now: torch.Tensor, mode: str = COSINE_OVER_HEADS) -> float:
    """Similarity of the tracked rows' attention before and after this step's cache update.

    prev, now: [H, R, N]. ``head``: cosine over the head axis for each (row, key) pair, averaged over rows
    and keys (the authors' code). ``key``: cosine of each row over the keys, averaged over heads and rows.
    """
    return drift_from_partials(drift_partials(prev, now, mode), mode)


def drift_partials(prev: torch.Tensor, now: torch.Tensor, mode: str) -> torch.Tensor:
    """The drift similarity's sums over this shard's heads, flat float32 (shards add them).

    ``head``: the head-axis cosine cos(a, b) = sum_h a_h b_h / (||a|| ||b||) needs its three
    sums (a.b, a.a, b.b) per (row, key) before the division: [3 * R * N]. ``key``: each head's
    cosine over the keys is whole on its shard; the mean needs the sum of cosines and their
    count: [2].
    prev, now: [H, R, N].
    """
    a, b = prev.float(), now.float()
    if mode == COSINE_OVER_HEADS:
        return torch.stack([(a * b).sum(0), (a * a).sum(0), (b * b).sum(0)]).flatten()  # [3RN]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)  # [H, R]
    return torch.stack([cos.sum(), cos.new_tensor(float(cos.numel()))])  # [2]


def drift_from_partials(partials: torch.Tensor, mode: str) -> float:
    """The similarity from ``drift_partials`` summed over all heads (eps as F.cosine_similarity)."""
    if mode != COSINE_OVER_HEADS:
        return (partials[0] / partials[1]).item()
    ab, aa, bb = partials.view(3, -1)  # each [R * N]
    norms = aa.sqrt().clamp_min(COSINE_EPS) * bb.sqrt().clamp_min(COSINE_EPS)
    return (ab / norms).mean().item()


def num_transfer_tokens(num_masked: int, steps: int) -> list[int]:
    """LLaDA's linear schedule: ``num_masked`` tokens over ``steps`` steps, the remainder first."""
    base, rem = divmod(num_masked, steps)
    return [base + 1 if i < rem else base for i in range(steps)]


def add_gumbel_noise(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """LLaDA's Gumbel-max sampling in float64: ``exp(logits) / (-log U)^temperature``; 0 is greedy."""
    if temperature == 0:
        return logits
    logits = logits.double()
    noise = torch.rand(logits.shape, dtype=torch.float64, generator=generator, device=logits.device)
    gumbel = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel
