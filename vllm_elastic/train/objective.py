"""The LLaDA SFT objective (masked diffusion on the response), and its block-decoding state.

LLaDA SFT (Nie et al. 2025, §2.3): the prompt is never masked; each response position (answer and
EOS padding) is masked with probability t ~ U(eps, 1), drawn per sequence; the loss is the
cross-entropy on masked positions weighted by 1/t, divided by the response length.

``prefix_share``: that share of the sequences also keeps a uniformly drawn prefix of the response
clean, i.e. the prompt/response boundary moves right, as in LLaDA's multi-turn SFT where earlier
turns are prompt.

The maskable positions (``is_response``) are the response, or for a drill the spans it asks for
(``batches.py``): the rest of a drill's answer is given, like its prompt.

Block batches (``Batch.block_start`` set) put every sequence in the state the semi-autoregressive
sampler decodes from: the response before the block clean, the block masked with probability t,
everything after it masked. Uniform masking leaves most of a line's neighbours visible, and a
small model then learns to read a number off the line below (the next step's left operand, the
next list entry) instead of computing it; the sampler never shows it the line below. The loss is
taken on the block alone, weighted 1/t and divided by the block's length: the positions after the
block are never committed from this state.

Two weightings of the masked positions' cross-entropy (``LOSS_WEIGHTINGS``): ``llada``, each
weighted 1/t and divided by the sequence's maskable length (LLaDA's, an upper bound on the negative
log-likelihood), and ``mean``, the plain mean over the batch's masked positions. Under ``llada`` a
sequence drawn with a small t puts a weight of up to 1/t on its few masked positions, so one
update's gradient rests on a handful of positions; a small model trained with it learned the
story's two-digit sums several times slower than with the plain mean (docs/TRAINING.md,
``benchmarks/masking_sums.py --loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.model import LLaDAModel

MIN_MASK_RATIO = 1e-3


def _mask_ratio(b: int, gen: torch.Generator) -> torch.Tensor:
    return (1 - MIN_MASK_RATIO) * torch.rand(b, 1, generator=gen) + MIN_MASK_RATIO  # [B, 1]


def noise(
    ids: torch.Tensor, is_response: torch.Tensor, prefix_share: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """masked [B, T] (positions to predict) and t [B, 1] (their masking probability)."""
    b, width = ids.shape
    t = _mask_ratio(b, gen)  # [B, 1]
    start = is_response.float().argmax(1, keepdim=True)  # [B, 1] first response position
    length = is_response.sum(1, keepdim=True)  # [B, 1]
    cut = start + (torch.rand(b, 1, generator=gen) * length).long()  # [B, 1]
    use_prefix = torch.rand(b, 1, generator=gen) < prefix_share  # [B, 1]
    cut = torch.where(use_prefix, cut, start)  # [B, 1]
    positions = torch.arange(width)[None, :]  # [1, T]
    masked = (torch.rand(b, width, generator=gen) < t) & is_response & (positions >= cut)  # [B, T]
    return masked, t


def block_noise(
    maskable: torch.Tensor, block_start: torch.Tensor, block_end: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """maskable: [B, T]; block_start, block_end: [B]. masked [B, T] (the block's maskable positions
    to predict), hidden [B, T] (masked and every maskable position after the block), t [B, 1] and
    length [B, 1] (the block's maskable positions, at least 1: the loss's normalizer)."""
    t = _mask_ratio(block_start.shape[0], gen)  # [B, 1]
    positions = torch.arange(maskable.shape[1])[None, :]  # [1, T]
    in_block = (positions >= block_start[:, None]) & (positions < block_end[:, None])  # [B, T]
    masked = in_block & maskable & (torch.rand(maskable.shape, generator=gen) < t)  # [B, T]
    after = maskable & (positions >= block_end[:, None])  # [B, T]
    length = (in_block & maskable).sum(1, keepdim=True).clamp_min(1).float()  # [B, 1]
    return masked, masked | after, t, length


def _llada_weighting(token_loss, masked, t, length) -> torch.Tensor:
    """The mean over sequences of the 1/t-weighted masked cross-entropy over each length."""
    weight = (1.0 / (t * length)).expand_as(masked)[masked]  # [M]
    return (token_loss * weight).sum() / masked.shape[0]


def _mean_weighting(token_loss, masked, t, length) -> torch.Tensor:
    """The mean cross-entropy over the batch's masked positions."""
    return token_loss.mean() if token_loss.numel() else token_loss.sum()


LOSS_WEIGHTINGS = {"llada": _llada_weighting, "mean": _mean_weighting}


def masked_diffusion_loss(
    model: LLaDAModel,
    ids: torch.Tensor,
    is_response: torch.Tensor,
    mask_id: int,
    gen: torch.Generator,
    prefix_share: float = 0.0,
    block: tuple[torch.Tensor, torch.Tensor] | None = None,
    weighting: str = "llada",
) -> torch.Tensor:
    """ids, is_response (the maskable positions): [B, T] on the host; ``block``: (start, end) [B]
    each for a block batch; ``weighting``: a key of ``LOSS_WEIGHTINGS``. The masks are drawn on the
    host from ``gen`` and the model runs where its weights are, so a run draws the same masks on
    any device."""
    if block is None:
        masked, t = noise(ids, is_response, prefix_share, gen)
        hidden, length = masked, is_response.sum(1, keepdim=True).float()  # [B, T], [B, 1]
    else:
        masked, hidden, t, length = block_noise(is_response, *block, gen)
    noisy = torch.where(hidden, torch.full_like(ids, mask_id), ids)  # [B, T]
    device = next(model.parameters()).device
    noisy, ids, masked, t, length = (x.to(device) for x in (noisy, ids, masked, t, length))
    logits = model(noisy)  # [B, T, V]
    token_loss = F.cross_entropy(logits[masked], ids[masked], reduction="none")  # [M]
    return LOSS_WEIGHTINGS[weighting](token_loss, masked, t, length)
