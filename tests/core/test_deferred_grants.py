"""Deferred refresh is pending on the decoder state until granted (an engine grants within a budget).

``core.generate`` grants every pending refresh at the next step (``test_exactness`` checks that it
then runs one step after the trigger); these tests grant by hand, as the vLLM runner does.
"""

from __future__ import annotations

from random_llada import random_prompts

from vllm_elastic.core.accounting import same_stats
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.settings import DecodeSettings

DEFERRED = DecodeSettings(gen_length=32, gamma=1.0, refresh_mode="deferred")  # gamma 1: always fires


def _decode(model, prompts, settings, grant):
    """Step every state with ``grant(step_index, states)`` choosing whom to grant; returns states."""
    states = [new_state(model, p, settings) for p in prompts]
    i = 0
    while any(not s.done for s in states):
        for s in grant(i, states):
            s.grant_refresh()
        step(model, states, grant_all=False)
        i += 1
    return states


def test_pending_refresh_reports_its_cost(model):
    (state,) = _decode(model, random_prompts(1, seed=3), DEFERRED, lambda i, s: [])
    cost = state.pending_refresh()
    n, layers = state.canvas.length, model.num_layers
    assert cost is not None and cost.rows == n and cost.num_layers == layers
    assert cost.layer_rows == n * (layers - cost.from_layer)
    assert cost.token_rows * layers >= cost.layer_rows > (cost.token_rows - 1) * layers
    assert cost.waited == state.stats.refresh_wait_steps > 0


def test_never_granted_decodes_like_no_refresh(model):
    """Without a grant nothing is refreshed: the tokens of ``refresh="never"``, the waits counted."""
    prompts = random_prompts(2, seed=3)
    starved = _decode(model, prompts, DEFERRED, lambda i, s: [])
    never = generate(model, prompts, DecodeSettings(gen_length=32, refresh="never"))
    for st, ref in zip(starved, never):
        assert st.result().tokens == ref.tokens
        assert sum(st.stats.refreshes) == 0 and st.stats.refresh_wait_steps > 0


def test_grant_every_step_equals_generate(model):
    prompts = random_prompts(3, seed=4)
    granted = _decode(model, prompts, DEFERRED, lambda i, s: s)
    ref = generate(model, prompts, DEFERRED)
    assert [s.result().tokens for s in granted] == [r.tokens for r in ref]
    assert all(same_stats(s.stats.to_dict(), r.stats.to_dict()) for s, r in zip(granted, ref))
    assert all(r.stats.refresh_wait_steps == 0 for r in ref)


def test_one_grant_per_step_delays_refreshes(model):
    """Grant only the longest-waiting pending refresh each step: the others wait, all finish."""

    def oldest(i, states):
        pending = [s for s in states if s.pending_refresh() is not None and not s.done]
        return sorted(pending, key=lambda s: -s.pending_refresh().waited)[:1]

    prompts = random_prompts(3, seed=4)
    states = _decode(model, prompts, DEFERRED, oldest)
    assert all(s.done for s in states)
    assert sum(s.stats.refresh_wait_steps for s in states) > 0
    assert all(sum(s.stats.refreshes) > 0 for s in states)
