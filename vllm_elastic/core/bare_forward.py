"""The speed of plain packed compute: one no-cache forward of a batch of whole canvases.

The yardstick of the engine's efficiency (``bench/efficiency.py``): every row of every layer is
computed once, in big matrices, with no cache, no statistics and no per-step bookkeeping.
"""

from __future__ import annotations

import time

import torch

from .model import LLaDAModel

TIMED_FORWARDS = 3  # the forward is timed this many times; the median counts
FIRST_TOKEN = 3  # above the special tokens (pad/EOS, BOS, mask)


def bare_rows_per_s(model: LLaDAModel, batch: int, length: int) -> float:
    """Layer-rows per second of one no-cache forward at [batch, length] (median of a few), on
    this process's threads."""
    ids = torch.randint(FIRST_TOKEN, model.config.vocab_size, (batch, length))
    times = []
    with torch.inference_mode():
        model(ids)  # warm
        for _ in range(TIMED_FORWARDS):
            start = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - start)
    return batch * length * model.num_layers / sorted(times)[len(times) // 2]
