"""Exactness as the oracle: cached decoders configured to recompute everything equal no-cache decodes."""

from __future__ import annotations

import pytest
import torch
from random_llada import EOS_ID, MASK_ID, random_model, random_prompts

from vllm_elastic.core import policy
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.settings import DecodeSettings


def full_logits(model, x: torch.Tensor) -> torch.Tensor:
    """A no-cache forward over the whole canvas, [N, V]."""
    with torch.no_grad():
        return model(x[None])[0]


def nocache_window_decode(model, prompt, gen_length, window, threshold) -> list[int]:
    """Elastic-Cache's commit rule (window, threshold, EOS truncation) with a full forward every step."""
    x = torch.tensor(prompt + [MASK_ID] * gen_length)
    masked = torch.arange(len(prompt), x.numel())
    eos_seen = False
    while masked.numel():
        win = masked[:window]
        conf, tok = policy.confidence(full_logits(model, x)[win], MASK_ID)
        keep = policy.threshold_commit(conf, threshold)
        x[win[keep]] = tok[keep]
        masked = masked[~torch.isin(masked, win[keep])]
        if not eos_seen and bool((tok[keep] == EOS_ID).any()):
            eos_seen = True
            masked = masked[masked <= win[keep][tok[keep] == EOS_ID].min()]
    return x[len(prompt) :].tolist()


def nocache_block_decode(model, prompt, gen_length, block, threshold) -> list[int]:
    """Fast-dLLM's block-wise threshold rule with a full forward every step."""
    x = torch.tensor(prompt + [MASK_ID] * gen_length)
    for lo in range(len(prompt), x.numel(), block):
        while bool((x[lo : lo + block] == MASK_ID).any()):
            is_masked = (x[lo : lo + block] == MASK_ID).nonzero().squeeze(-1) + lo
            conf, tok = policy.confidence(full_logits(model, x)[is_masked], MASK_ID)
            keep = policy.threshold_commit(conf, threshold)
            x[is_masked[keep]] = tok[keep]
    return x[len(prompt) :].tolist()


@pytest.mark.parametrize("block_caching", [True, False])
def test_elastic_refreshing_everything_equals_nocache(model, block_caching):
    gen = 24
    settings = DecodeSettings(
        method="elastic", gen_length=gen, window=gen, threshold=0.3, refresh="always",
        block_caching=block_caching,
    )
    for prompt in random_prompts(3, seed=1):
        state = new_state(model, prompt, settings)
        while not state.done:
            step(model, [state])
        want = nocache_window_decode(model, prompt, gen, gen, 0.3)
        assert state.canvas.x[len(prompt) :].tolist() == want
        assert state.stats.layer_token_fraction > 0.99  # every layer recomputed every row


def llada_reference_decode(model, prompt, gen_length, block, steps) -> list[int]:
    """LLaDA's generate.py (greedy, low_confidence) with a shorter last block: each block gets
    ``steps * len(block) // gen_length`` steps (at least 1, at most its length)."""
    x = torch.tensor(prompt + [MASK_ID] * gen_length)
    p = len(prompt)
    for lo in range(p, x.numel(), block):
        hi = min(lo + block, x.numel())
        block_steps = min(hi - lo, max(1, steps * (hi - lo) // gen_length))
        schedule = policy.num_transfer_tokens(hi - lo, block_steps)
        for count in schedule:
            probs = torch.softmax(full_logits(model, x)[p:].double(), dim=-1)  # [G, V]
            conf, x0 = probs.max(dim=-1)
            conf[hi - p :] = -torch.inf
            conf = torch.where(x[p:] == MASK_ID, conf, torch.full_like(conf, -torch.inf))
            chosen = torch.topk(conf, count).indices + p
            x[chosen] = x0[chosen - p]
    return x[p:].tolist()


@pytest.mark.parametrize("gen,block,steps", [(32, 8, 16), (28, 8, 14), (5, 8, 5), (20, 8, 7)])
def test_llada_equals_reference_with_any_last_block(model, gen, block, steps):
    """A canvas that is a multiple of the block keeps LLaDA's schedule; a shorter last block is
    decoded the same way with its share of the steps."""
    s = DecodeSettings(method="llada", gen_length=gen, block_length=block, steps=steps)
    prompts = random_prompts(2, seed=6)
    for prompt, result in zip(prompts, generate(model, prompts, s)):
        want = llada_reference_decode(model, prompt, gen, block, steps)
        eos = want.index(EOS_ID) if EOS_ID in want else len(want)
        assert result.tokens == want[:eos]


def test_llada_block_steps_rule():
    whole = DecodeSettings(method="llada", gen_length=64, block_length=16, steps=32)
    assert whole.llada_block_steps() == [8, 8, 8, 8]  # the reference's steps // num_blocks
    assert whole.replace(gen_length=40).llada_block_steps() == [12, 12, 6]  # floor(32 * 8 / 40)
    assert whole.replace(gen_length=40, steps=None).llada_block_steps() == [16, 16, 8]
    assert whole.replace(gen_length=3, steps=1000).llada_block_steps() == [3]  # <= its length


@pytest.mark.parametrize("gen", [32, 28, 3])
def test_fastdllm_without_cache_equals_nocache(model, gen):
    settings = DecodeSettings(method="fastdllm", gen_length=gen, block_length=8, threshold=0.3,
                              cache="none")
    prompts = random_prompts(3, seed=2)
    got = generate(model, prompts, settings)
    for prompt, result in zip(prompts, got):
        want = nocache_block_decode(model, prompt, gen, 8, 0.3)
        eos = want.index(EOS_ID) if EOS_ID in want else len(want)
        assert result.tokens == want[:eos]
        assert result.stats.layer_token_fraction == 1.0


def test_drift_test_triggers_refresh_and_saves_rows(model):
    prompts = random_prompts(2, seed=3)
    never = generate(model, prompts, DecodeSettings(gen_length=32, refresh="never"))
    always_fire = generate(model, prompts, DecodeSettings(gen_length=32, gamma=1.0))
    for a, b in zip(never, always_fire):
        assert sum(a.stats.refreshes) == 0
        assert b.stats.refreshes[0] == 0  # l* >= 0, so the refresh starts at layer 1 at the earliest
        assert b.stats.refreshes[-1] == b.stats.nfe - 1
        assert a.stats.layer_token_fraction < b.stats.layer_token_fraction


def test_paper_cosine_option_runs_and_differs_in_statistic():
    prev = torch.rand(4, 2, 10).softmax(-1)
    now = torch.rand(4, 2, 10).softmax(-1)
    heads = policy.drift_similarity(prev, now, "head")
    keys = policy.drift_similarity(prev, now, "key")
    manual_heads = torch.nn.functional.cosine_similarity(prev, now, dim=0).mean().item()
    assert heads == pytest.approx(manual_heads)
    assert heads != pytest.approx(keys)
    assert policy.drift_similarity(prev, prev, "key") == pytest.approx(1.0)


def test_gqa_model_decodes_identically_batched():
    model = random_model(seed=5, n_kv_heads=2)
    prompts = random_prompts(3, seed=4)
    s = DecodeSettings(gen_length=32, gamma=0.99)
    batched = generate(model, prompts, s)
    alone = [generate(model, [p], s)[0] for p in prompts]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]


def test_deferred_refresh_runs_one_step_later(model):
    prompts = random_prompts(2, seed=3)
    immediate = generate(model, prompts, DecodeSettings(gen_length=32, gamma=1.0))
    deferred = generate(model, prompts, DecodeSettings(gen_length=32, gamma=1.0,
                                                       refresh_mode="deferred"))
    for a, b in zip(immediate, deferred):
        # every step from the second reports a trigger at layer 0; deferred refreshes one step later
        assert b.stats.refreshes[-1] == a.stats.refreshes[-1] - 1
        assert b.stats.refreshes[0] == 0
