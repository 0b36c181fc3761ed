"""Random LLaDA models and prompts for the core tests."""

from __future__ import annotations

import random

import torch

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel

VOCAB, MASK_ID, EOS_ID = 64, 63, 62


def random_model(seed: int = 0, n_kv_heads: int = 4, n_layers: int = 3) -> LLaDAModel:
    torch.manual_seed(seed)
    cfg = LLaDAConfig(
        d_model=128, n_heads=4, n_kv_heads=n_kv_heads, n_layers=n_layers, mlp_hidden_size=192,
        vocab_size=VOCAB, embedding_size=VOCAB, rope_theta=10000.0, max_sequence_length=512,
        mask_token_id=MASK_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
    )
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():  # sharper logits than the default init, so commits vary in confidence
        model.transformer["ff_out"].weight.mul_(8.0)
    return model


def random_prompts(n: int, seed: int = 0, lo: int = 3, hi: int = 20) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(0, EOS_ID) for _ in range(rng.randint(lo, hi))] for _ in range(n)]

