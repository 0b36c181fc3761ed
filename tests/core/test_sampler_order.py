"""``benchmarks/sampler_order.py`` writes out the reference sampler's rule over ``model(ids)``: its
tokens are those of the ``llada`` decoder at one token a step, and every position is committed
once, in the step range of its block."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from random_llada import MASK_ID, random_model, random_prompts

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    path = ROOT / "benchmarks/sampler_order.py"
    spec = importlib.util.spec_from_file_location("sampler_order", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_commit_order_is_the_llada_decoders_and_each_step_once():
    tool, model = _tool(), random_model(seed=3)
    block, blocks = tool.BLOCK, 2
    for prompt in random_prompts(2, seed=5):
        order = tool.commit_order(model, prompt, MASK_ID, block * blocks, blocks)
        settings = DecodeSettings(method="llada", gen_length=block * blocks,
                                  block_length=block, steps=block * blocks)  # fmt: skip
        (want,) = generate(model, [prompt], settings)
        got = [t for t, _ in order]
        assert len(want.tokens) > block and got[: len(want.tokens)] == want.tokens
        steps = [s for _, s in order]
        assert sorted(steps) == list(range(block * blocks))
        assert all(s // block == i // block for i, s in enumerate(steps))
