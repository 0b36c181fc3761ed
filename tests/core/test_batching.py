"""Batched decoding equals one-by-one decoding (float32), for every method."""

from __future__ import annotations

import pytest
from random_llada import random_prompts

from vllm_elastic.core.accounting import same_stats
from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings

CASES = {
    "llada": DecodeSettings(method="llada", gen_length=32, steps=16, block_length=8),
    "llada-sampled": DecodeSettings(method="llada", gen_length=32, steps=32, block_length=16,
                                    temperature=0.8, seed=7),
    "fastdllm-prefix": DecodeSettings(method="fastdllm", gen_length=32, block_length=8,
                                      threshold=0.5),
    "fastdllm-dual": DecodeSettings(method="fastdllm", gen_length=32, block_length=8,
                                    threshold=0.5, cache="dual"),
    "elastic": DecodeSettings(method="elastic", gen_length=32, window=8, threshold=0.5,
                              gamma=0.99),
    "elastic-deferred": DecodeSettings(method="elastic", gen_length=32, window=8, threshold=0.5,
                                       gamma=0.99, refresh_mode="deferred"),
    "elastic-no-block-caching": DecodeSettings(method="elastic", gen_length=32, window=8,
                                               block_caching=False, gamma=0.95),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_equals_alone(model, name):
    prompts = random_prompts(5, seed=11)  # lengths 3..20: every sequence has its own N
    settings = CASES[name]
    batched = generate(model, prompts, settings)
    alone = [generate(model, [p], settings)[0] for p in prompts]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert all(same_stats(b.stats.to_dict(), a.stats.to_dict()) for b, a in zip(batched, alone))


def test_mixed_settings_in_one_batch(model):
    prompts = random_prompts(3, seed=12)
    mixed = [CASES["elastic"], CASES["elastic"].replace(window=4, gamma=0.5),
             CASES["elastic"].replace(gen_length=16)]
    batched = generate(model, prompts, mixed)
    alone = [generate(model, [p], s)[0] for p, s in zip(prompts, mixed)]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]


@pytest.mark.parametrize("name", ["llada", "fastdllm-prefix", "elastic"])
def test_early_stop_keeps_output_and_saves_steps(model, name):
    prompts = random_prompts(4, seed=13)
    settings = CASES[name]
    full = generate(model, prompts, settings)
    early = generate(model, prompts, settings.replace(early_stop=True))
    assert [r.tokens for r in early] == [r.tokens for r in full]
    for f, e in zip(full, early):
        assert e.stats.nfe <= f.stats.nfe
        if f.finished_by_eos and name != "elastic":
            assert e.stats.nfe < f.stats.nfe
