"""Deferred refresh through vLLM with a tiny refresh budget: one sequence's refresh per step.

The runner reports each request's pending refresh with the step's output; the scheduler grants the
longest-waiting one per step (``refresh_budget`` 1 token row: below any refresh's cost, and one is
always granted); the others keep decoding on their stale cache (``plugin/refresh.py``). With an
unlimited budget (vLLM's default token budget here) deferred equals the core decoder's deferred
mode: ``test_offline.py`` / ``test_tp.py`` run ``METHODS["elastic-deferred"]``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from plugin_helpers import (  # noqa: E402
    ENGINE_WIDE,
    GEN_LENGTH,
    METHODS,
    PROMPTS,
    VOCAB,
    expected,
    expected_one_grant_per_step,
    generate_together,
    make_llm,
)

DEFERRED = METHODS["elastic-deferred"]


@pytest.fixture(scope="module")
def llm(checkpoint):
    engine = make_llm(
        checkpoint, additional_config={"elastic": {**ENGINE_WIDE, "refresh_budget": 1}}
    )
    yield engine
    del engine


def _generate(llm, extra):
    from vllm import SamplingParams

    from vllm_elastic.plugin.stats import request_stats

    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    outs = generate_together(llm, PROMPTS, params)  # the grants assume they start together
    got = [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs]
    return got, request_stats(llm, outs)


def test_one_refresh_per_step_delays_the_others(llm, reference_model):
    got, stats = _generate(llm, DEFERRED)
    assert all(reason in ("stop", "length") for _, reason in got)
    assert all(0 < len(t) <= GEN_LENGTH and all(0 <= x < VOCAB for x in t) for t, _ in got)
    waits = [st["refresh_wait_steps"] for st in stats]
    assert sum(waits) > 0, waits  # some refreshes waited for their grant
    assert sum(sum(st["refreshes_per_layer"]) for st in stats) > 0
    # the same grants (longest-waiting first, one per step) in the core give the same tokens
    assert got == expected_one_grant_per_step(reference_model, PROMPTS, DEFERRED)


def test_immediate_is_not_budgeted(llm, reference_model):
    """The budget applies to deferred refreshes only: immediate mode still equals the core."""
    immediate = {**DEFERRED, "refresh_mode": "immediate"}
    got, stats = _generate(llm, immediate)
    assert got == expected(reference_model, PROMPTS, immediate)
    assert all(st["refresh_wait_steps"] == 0 for st in stats)


def test_refresh_budget_is_engine_wide_only(llm):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="refresh_budget is engine-wide"):
        llm.generate(
            {"prompt_token_ids": PROMPTS[0]},
            SamplingParams(
                max_tokens=GEN_LENGTH, temperature=0.0, extra_args={"refresh_budget": 4}
            ),
            use_tqdm=False,
        )


# engine-only key -> (its reader, a good value, what an unset key reads as)
ENGINE_ONLY = {
    "refresh_budget": ("engine_refresh_budget", 64, None),
    "steps_per_schedule": ("engine_steps_per_schedule", 1, "DEFAULT_STEPS_PER_SCHEDULE"),
}


@pytest.mark.parametrize("key", sorted(ENGINE_ONLY))
@pytest.mark.parametrize("bad", [0, -3, -1, 2.5, 1.5, "many", True, False])
def test_bad_engine_only_key_is_a_clear_error(key, bad):
    from vllm_elastic.plugin import settings

    reader, good, unset = ENGINE_ONLY[key]
    read = getattr(settings, reader)
    config = {"elastic": {key: bad}}
    with pytest.raises(ValueError, match=f"{key} must be an int >= 1"):
        read(config)
    with pytest.raises(ValueError, match=key):
        settings.engine_settings(config)
    assert read({"elastic": {key: good}}) == good
    assert read(None) == (getattr(settings, unset) if unset else None)


def test_steps_per_schedule_is_engine_wide_only():
    from vllm import SamplingParams

    from vllm_elastic.core.settings import DecodeSettings
    from vllm_elastic.plugin.settings import request_settings

    params = SamplingParams(max_tokens=GEN_LENGTH, extra_args={"steps_per_schedule": 2})
    with pytest.raises(ValueError, match="steps_per_schedule is engine-wide"):
        request_settings(params, DecodeSettings())


def test_choose_grants_oldest_first_within_budget():
    from vllm_elastic.core.decoders.base import RefreshCost
    from vllm_elastic.plugin.refresh import choose_grants

    # token rows: ceil(N (L - l) / L) with L = 4
    pending = {
        "a": RefreshCost(rows=40, from_layer=2, num_layers=4, waited=0),  # 20
        "b": RefreshCost(rows=40, from_layer=0, num_layers=4, waited=2),  # 40
        "c": RefreshCost(rows=10, from_layer=3, num_layers=4, waited=0),  # 3 (2.5 rounded up)
    }
    arrival = {"a": 1.0, "b": 2.0, "c": 0.5}
    assert pending["c"].token_rows == 3
    assert choose_grants(pending, arrival, budget=1) == {"b"}  # at least one: the oldest
    assert choose_grants(pending, arrival, budget=43) == {"b", "c"}  # then by arrival
    assert choose_grants(pending, arrival, budget=50) == {"b", "c"}  # "a" does not fit: stop
    assert choose_grants(pending, arrival, budget=63) == {"a", "b", "c"}
