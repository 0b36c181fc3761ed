"""The policy pieces shared by the reference decoders and the vLLM runner.

Each function is one decision of the authors' code (Elastic-Cache llada/generate.py@46c0bc32 and
its modeling_llada.py; ML-GSAI/LLaDA generate.py): commit rule, window, most-attended selection,
drift similarity, LLaDA's transfer schedule and Gumbel noise. The decoders and the engine call
these; nothing re-implements them.
"""

from __future__ import annotations

import torch

COSINE_OVER_HEADS = "head"  # the authors' code: F.cosine_similarity(Sprev, Snow, dim=1) on [B, H, R, N]
COSINE_OVER_KEYS = "key"  # the paper's text: cosine of each attention row over the keys, per head
COSINE_MODES = (COSINE_OVER_HEADS, COSINE_OVER_KEYS)
COSINE_EPS = 1e-8  # F.cosine_similarity's default: norms below it are clamped

# Where a refresh that a drift test triggered starts, from the layer above the first layer whose
# test fired. "above" (the authors' code): that layer, from its cached inputs, whose rows outside
# the step's queries come from layers that were not recomputed. "first": every layer from layer 0,
# so the cache is exact again; the forward whose test fired has already run the layers below it,
# so this needs the deferred mode (the next step refreshes). In both, a test that fires at the last
# layer starts no refresh (no layer lies above it), as in the authors' code.
REFRESH_STARTS = {
    "above": lambda fired_above: fired_above,
    "first": lambda fired_above: 0,
}


def forbid_mask(scores: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``scores`` ([..., V] logits or probabilities) with the MASK column at -inf (a copy).

    NOTE: the one place where every decoder differs from its reference sampler. LLaDA's, Fast-dLLM's
    and Elastic-Cache's code take the argmax over the whole vocabulary, MASK included; a model whose
    most likely token at a masked position is MASK itself then "commits" MASK, the position stays
    masked and nothing moves: Fast-dLLM and Elastic-Cache repeat the step for ever, LLaDA ends with
    masks in its output. Taking the best token other than MASK guarantees that each commit fills a
    position. The confidence of that token is still its probability under the full softmax, so
    whenever the reference's choice is not MASK, the decision is exactly the reference's.
    """
    out = scores.clone()
    out[..., mask_id] = -torch.inf
    return out


def confidence(logits: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max softmax probability over the tokens other than MASK, and that token, in float64.

    logits: [R, V] -> conf [R], tokens [R] (``forbid_mask``: never ``mask_id``).
    """
    probs = torch.softmax(logits.double(), dim=-1)  # [R, V] the full distribution
    conf, tokens = forbid_mask(probs, mask_id).max(dim=-1)  # [R], [R]
    return conf, tokens


def threshold_commit(conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM's rule for one sequence: every position with conf >= threshold, and always the most
    confident one (generate.py@46c0bc32). conf: [R] -> bool [R]; ``commit_batched`` with one
    sequence."""
    n = conf.numel()
    rows = torch.arange(n, device=conf.device)
    return commit_batched(
        conf, torch.zeros_like(rows), rows, 1, n,
        torch.tensor([threshold], dtype=conf.dtype, device=conf.device),
        torch.tensor([-1], device=conf.device),
    )


def commit_batched(
    conf: torch.Tensor,
    seg: torch.Tensor,
    local: torch.Tensor,
    num_seqs: int,
    width: int,
    threshold: torch.Tensor,
    top_k: torch.Tensor,
) -> torch.Tensor:
    """The commit rule of every sequence at once over packed rows: the ``top_k`` most confident
    (the fixed-rate rule, ``tokens_per_iter`` in the authors' code; LLaDA's transfer schedule), or
    Fast-dLLM's threshold rule (every row with conf >= min(threshold, max conf)).

    conf: [O] float64 packed by sequence; seg, local: [O] each row's sequence and index in it;
    threshold: [R] float64; top_k: [R] (>= 0: the top-k rule, -1: the threshold rule) -> bool [O].
    """
    pad = torch.full((num_seqs, width), -torch.inf, dtype=conf.dtype, device=conf.device)
    pad[seg, local] = conf  # [R, O_max]
    best = pad.max(dim=1).values if width else pad.new_zeros(num_seqs)  # [R]
    by_threshold = conf >= torch.minimum(threshold, best)[seg]
    order = torch.argsort(pad, dim=1, descending=True, stable=True)  # [R, O_max]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(width, device=conf.device).expand_as(order))
    by_rank = rank[seg, local] < top_k[seg]
    return torch.where(top_k[seg] >= 0, by_rank, by_threshold)


def sliding_window(masked: torch.Tensor, window: int, block_caching: bool) -> torch.Tensor:
    """The query window: the W leftmost still-masked positions, or all of them without block caching.

    masked: ascending positions [M] -> [min(W, M)] or [M].
    """
    return masked[:window] if block_caching else masked


def attention_mass_partial(window_probs: torch.Tensor) -> torch.Tensor:
    """The mass summed over this shard's heads and the window rows: [H, W, N] -> [N].

    NOTE: a sum over heads, so tensor-parallel shards add their partials (core/forward.py reduces).
    """
    return window_probs.sum(dim=(0, 1))  # [N]


def mask_attended(score: torch.Tensor, still_masked: torch.Tensor) -> torch.Tensor:
    """Masked keys cannot be most-attended. score: [N], still_masked: bool [N] -> [N]."""
    return score.masked_fill(still_masked, 0.0)


def most_attended_batched(
    mass: torch.Tensor, still_masked: torch.Tensor, key_invalid: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """``most_attended`` of every sequence at once: the top keys by window mass, masked keys
    scoring 0 (as ``mask_attended``) and keys past a sequence's length never chosen.

    mass: [R, N]; still_masked, key_invalid: bool [R, N]; kept: bool [R, width], rank < each
    sequence's ``track_num`` (width = min(the batch's track_num, N)) -> [R, width] positions, -1
    past each sequence's ``track_num``.
    """
    if kept.shape[1] == 0:
        return mass.new_zeros(mass.shape[0], 0, dtype=torch.long)
    score = mask_attended(mass, still_masked).masked_fill(key_invalid, -1.0)  # [R, N]
    top = torch.topk(score, kept.shape[1], dim=-1).indices  # [R, width]
    return torch.where(kept, top, -1)


def drift_similarity_batched(
    heads_part: torch.Tensor,
    keys_part: torch.Tensor,
    pair_invalid: torch.Tensor,
    pair_count: torch.Tensor,
    over_heads: torch.Tensor | bool,
) -> torch.Tensor:
    """``drift_from_partials`` of every sequence at once, from the varlen attention's partials
    summed over all heads.

    heads_part: [3, R, K, N] (a.b, a.a, b.b per tracked row and key); keys_part: [2, R];
    pair_invalid: bool [R, K, N] (no tracked row or no key there) and pair_count: [R] the valid
    pairs (at least 1), both fixed for a step; over_heads: bool [R] picks each sequence's cosine,
    or one bool for all of them -> [R] float64.
    """
    if over_heads is not False:
        ab, aa, bb = heads_part  # each [R, K, N]
        norms = aa.sqrt().clamp_min(COSINE_EPS) * bb.sqrt().clamp_min(COSINE_EPS)
        cos = (ab / norms).masked_fill(pair_invalid, 0.0)
        heads = cos.double().sum((1, 2)) / pair_count  # [R]
        if over_heads is True:
            return heads
    keys = keys_part[0].double() / keys_part[1].double().clamp_min(1)  # [R]
    return keys if over_heads is False else torch.where(over_heads, heads, keys)


def decide_layer(
    mass: torch.Tensor,
    heads_part: torch.Tensor,
    keys_part: torch.Tensor,
    still_masked: torch.Tensor,
    key_invalid: torch.Tensor,
    kept: torch.Tensor,
    pair_invalid: torch.Tensor,
    pair_count: torch.Tensor,
    over_heads: torch.Tensor,
    over_heads_all: int,
    can_test: torch.Tensor,
    defer: torch.Tensor,
    gamma: torch.Tensor,
    refresh_from: torch.Tensor,
    deferred_from: torch.Tensor,
    layer: int,
    num_layers: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's Elastic-Cache decisions for every sequence, from its attention statistics summed
    over all heads: the most-attended keys, and the drift test of the sequences it tests here.

    A sequence is tested at ``layer`` when it ``can_test``, does not recompute every row here
    (layer < refresh_from) and has no deferred trigger yet. It fires when its similarity is below
    its ``gamma``: an immediate sequence then recomputes every row from the next layer on
    (``refresh_from``), a ``defer`` one records that layer for its next refresh (``deferred_from``).

    mass: [R, N]; heads_part, keys_part, pair_invalid, pair_count: as
    ``drift_similarity_batched`` (K = 0: no drift test this step); still_masked, key_invalid,
    kept: as ``most_attended_batched``; over_heads: bool [R], or ``over_heads_all`` 1 / 0 when
    every sequence uses the head / key cosine (-1: mixed); can_test, defer: bool [R]; gamma: [R]
    float64; refresh_from, deferred_from: [R] (num_layers: none).
    -> attended [R, width] (-1: absent), similarity [R] float64 (NaN: not tested), refresh_from,
    deferred_from (new tensors; the inputs are not written).
    """
    attended = most_attended_batched(mass, still_masked, key_invalid, kept)
    similarity = torch.full_like(gamma, torch.nan)
    if heads_part.shape[2] == 0:
        return attended, similarity, refresh_from, deferred_from
    testing = can_test & (layer < refresh_from) & (deferred_from == num_layers)  # [R]
    mode = over_heads if over_heads_all < 0 else bool(over_heads_all)
    sim = drift_similarity_batched(heads_part, keys_part, pair_invalid, pair_count, mode)
    similarity = torch.where(testing, sim, similarity)
    fired = testing & (sim < gamma)  # [R]
    deferred_from = torch.where(fired & defer, layer + 1, deferred_from)
    refresh_from = torch.where(fired & ~defer, layer + 1, refresh_from)
    return attended, similarity, refresh_from, deferred_from


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
