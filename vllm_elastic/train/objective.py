"""The LLaDA SFT objective (masked diffusion on the response), with an optional clean prefix.

LLaDA SFT (Nie et al. 2025, §2.3): the prompt is never masked; each response position (answer and
EOS padding) is masked with probability t ~ U(eps, 1), drawn per sequence; the loss is the
cross-entropy on masked positions weighted by 1/t, divided by the response length.

``prefix_share``: that share of the sequences also keeps a uniformly drawn prefix of the response
clean, i.e. the prompt/response boundary moves right, as in LLaDA's multi-turn SFT where earlier
turns are prompt. The semi-autoregressive sampler decodes block by block with everything before the
block committed, and these sequences put the model in that state more often.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.model import LLaDAModel

MIN_MASK_RATIO = 1e-3


def noise(
    ids: torch.Tensor, is_response: torch.Tensor, prefix_share: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """masked [B, T] (positions to predict) and t [B, 1] (their masking probability)."""
    b, width = ids.shape
    t = (1 - MIN_MASK_RATIO) * torch.rand(b, 1, generator=gen) + MIN_MASK_RATIO  # [B, 1]
    start = is_response.float().argmax(1, keepdim=True)  # [B, 1] first response position
    length = is_response.sum(1, keepdim=True)  # [B, 1]
    cut = start + (torch.rand(b, 1, generator=gen) * length).long()  # [B, 1]
    use_prefix = torch.rand(b, 1, generator=gen) < prefix_share  # [B, 1]
    cut = torch.where(use_prefix, cut, start)  # [B, 1]
    positions = torch.arange(width)[None, :]  # [1, T]
    masked = (torch.rand(b, width, generator=gen) < t) & is_response & (positions >= cut)  # [B, T]
    return masked, t


def masked_diffusion_loss(
    model: LLaDAModel,
    ids: torch.Tensor,
    is_response: torch.Tensor,
    mask_id: int,
    gen: torch.Generator,
    prefix_share: float = 0.0,
) -> torch.Tensor:
    """ids, is_response: [B, T]. The mean over sequences of the 1/t-weighted masked cross-entropy."""
    masked, t = noise(ids, is_response, prefix_share, gen)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)  # [B, T]
    logits = model(noisy)  # [B, T, V]
    token_loss = F.cross_entropy(logits[masked], ids[masked], reduction="none")  # [M]
    length = is_response.sum(1, keepdim=True).float()  # [B, 1]
    weight = (1.0 / (t * length)).expand_as(ids)[masked]  # [M]
    return (token_loss * weight).sum() / ids.shape[0]
