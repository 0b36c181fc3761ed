"""Every decode ends: MASK is never committed, and each request stops by its step bound.

A random LLaDA rigged so that MASK is the most likely token everywhere is what makes the reference
samplers stall (Fast-dLLM and Elastic-Cache re-commit MASK for ever, LLaDA ends with masks in its
output). Here every method must fill its canvas within its bound. The bound itself is checked by
decoders that commit nothing (a patched commit rule) and by the ``max_steps`` setting.
"""

from __future__ import annotations

import pytest
import torch
from random_llada import MASK_ID, random_model, random_prompts

from vllm_elastic.core import policy
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.settings import DecodeSettings

GEN_LENGTH, BLOCK_LENGTH = 32, 8
RIG_DIM = 0  # the residual-stream dimension the rig drives
RIG_EMBEDDING = 100.0  # every token's embedding along RIG_DIM: dominates the residual stream
RIG_HEAD = 50.0  # the LM-head weight of MASK along RIG_DIM: the MASK logit far above the rest

SETTINGS = {
    "llada": DecodeSettings(method="llada", gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH),
    "llada-random": DecodeSettings(
        method="llada", gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH, steps=16,
        temperature=0.5, remasking="random", seed=3,
    ),
    "fastdllm-prefix": DecodeSettings(
        method="fastdllm", gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH
    ),
    "fastdllm-dual": DecodeSettings(
        method="fastdllm", gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH, cache="dual"
    ),
    "fastdllm-top2": DecodeSettings(
        method="fastdllm", gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH, tokens_per_step=2
    ),
    "elastic": DecodeSettings(method="elastic", gen_length=GEN_LENGTH, window=4),
    "elastic-deferred": DecodeSettings(
        method="elastic", gen_length=GEN_LENGTH, window=4, refresh_mode="deferred"
    ),
    "elastic-early-stop": DecodeSettings(
        method="elastic", gen_length=GEN_LENGTH, window=4, early_stop=True
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def mask_loving_model():
    """A random LLaDA whose argmax is MASK at every position (a constant residual direction that
    only MASK's LM-head row reads)."""
    model = random_model(seed=5)
    with torch.no_grad():
        model.transformer["wte"].weight[:, RIG_DIM] = RIG_EMBEDDING
        head = model.transformer["ff_out"].weight  # [V, d]
        head[:, RIG_DIM] = 0.0
        head[MASK_ID, RIG_DIM] = RIG_HEAD
    return model


def _decode(model, prompt: list[int], settings: DecodeSettings):
    """Step one state to its end; returns it (never loops past its bound + 1)."""
    state = new_state(model, prompt, settings)
    for _ in range(state.max_steps + 1):
        if state.done:
            break
        step(model, [state])
    assert state.done, f"not done after its bound of {state.max_steps} steps"
    return state


def test_rigged_model_prefers_mask(mask_loving_model):
    """The precondition: without the rule, MASK would be committed everywhere."""
    (prompt,) = random_prompts(1, seed=1)
    ids = torch.tensor(prompt + [MASK_ID] * GEN_LENGTH)  # [N]
    logits = mask_loving_model(ids[None])[0]  # [N, V]
    assert bool((logits.argmax(-1) == MASK_ID).all())


@pytest.mark.parametrize("name", list(SETTINGS))
def test_mask_is_never_committed(mask_loving_model, name):
    settings = SETTINGS[name]
    for prompt in random_prompts(2, seed=7):
        state = _decode(mask_loving_model, prompt, settings)
        result = state.result()
        assert not result.step_limited
        assert state.steps_taken <= state.max_steps
        assert MASK_ID not in result.tokens
        assert not state.canvas.incomplete()
        # the whole canvas is committed, or the answer up to its EOS
        assert result.finished_by_eos or len(result.tokens) == GEN_LENGTH


def test_step_bound_of_each_method():
    assert _bound(SETTINGS["llada"]) == GEN_LENGTH  # steps default to gen_length
    assert _bound(SETTINGS["llada-random"]) == 16  # its schedule
    for name in ("fastdllm-prefix", "fastdllm-top2", "elastic", "elastic-deferred"):
        assert _bound(SETTINGS[name]) == GEN_LENGTH  # one masked position per step at least
    assert _bound(SETTINGS["elastic"].replace(max_steps=5)) == 5
    assert _bound(SETTINGS["llada"].replace(max_steps=10 * GEN_LENGTH)) == GEN_LENGTH


def _bound(settings: DecodeSettings) -> int:
    (prompt,) = random_prompts(1, seed=2)
    return new_state(random_model(seed=1), prompt, settings).max_steps


def _commit_nothing(conf, *rule):
    return torch.zeros_like(conf, dtype=torch.bool)  # [O] no row of any sequence


@pytest.mark.parametrize("name", list(SETTINGS))
def test_step_bound_ends_a_decode_that_commits_nothing(monkeypatch, name):
    monkeypatch.setattr(policy, "commit_batched", _commit_nothing)  # every method
    monkeypatch.setattr(policy, "num_transfer_tokens", lambda n, steps: [0] * steps)  # llada
    model, settings = random_model(seed=2), SETTINGS[name]
    prompts = random_prompts(2, seed=4)
    state = _decode(model, prompts[0], settings)
    assert state.steps_taken == state.max_steps
    assert state.step_limited and state.result().step_limited
    assert state.result().tokens == []  # nothing committed: nothing handed out, no MASK
    results = generate(model, prompts, settings)  # the batched loop ends as well
    assert all(r.step_limited and r.tokens == [] for r in results)


@pytest.mark.parametrize("method", ["llada", "fastdllm", "elastic"])
def test_max_steps_setting_caps_a_decode(method):
    model = random_model(seed=3)
    base = SETTINGS[{"fastdllm": "fastdllm-prefix"}.get(method, method)]
    capped = base.replace(max_steps=2)
    prompt = random_prompts(1, seed=6)[0]
    state = _decode(model, prompt, capped)
    assert state.steps_taken == 2 and state.stats.nfe == 2
    result = state.result()
    assert result.step_limited and MASK_ID not in result.tokens
    assert len(result.tokens) < GEN_LENGTH
    full = _decode(model, prompt, base).result()
    assert not full.step_limited
    # committed tokens are never remasked: the first 2 steps' answer is a prefix of the full one
    assert full.tokens[: len(result.tokens)] == result.tokens


def test_max_steps_must_be_positive():
    with pytest.raises(ValueError, match="max_steps must be > 0"):
        DecodeSettings(max_steps=0).validate()
    assert DecodeSettings.from_dict({"max_steps": "7"}).max_steps == 7


def test_full_refresh_every_must_be_positive():
    with pytest.raises(ValueError, match="full_refresh_every must be > 0"):
        DecodeSettings(full_refresh_every=0).validate()
    assert DecodeSettings.from_dict({"full_refresh_every": "4"}).full_refresh_every == 4
    assert DecodeSettings.from_dict({"full_refresh_every": None}).full_refresh_every is None
