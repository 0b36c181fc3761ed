"""``DecodeState.next_rows`` (what an engine's scheduler books for a step) is, before every step,
the number of rows that step's plan computes, for every method; 0 once the decode is done."""

from __future__ import annotations

import pytest
from random_llada import random_prompts
from test_batching import CASES

from vllm_elastic.core.generate import new_state, step
from vllm_elastic.core.kv_pool import KVPool
from vllm_elastic.core.settings import DecodeSettings

ALL_CASES = {
    **CASES,
    "fastdllm-none": DecodeSettings(method="fastdllm", gen_length=32, block_length=8,
                                    threshold=0.5, cache="none"),
    "elastic-always": DecodeSettings(method="elastic", gen_length=32, window=8, threshold=0.5,
                                     refresh="always"),
    "elastic-full-every-3": DecodeSettings(method="elastic", gen_length=32, window=8,
                                           threshold=0.5, full_refresh_every=3),
}  # fmt: skip


def _record_plans(state, log: list[int]) -> None:
    plan = state.plan

    def recording():
        p = plan()
        full = p.refresh_from == 0  # every layer recomputes all N rows
        log.append(p.ids.shape[0] if full else p.rows.size)
        return p

    state.plan = recording


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_next_rows_is_the_planned_rows(model, name):
    pool = KVPool.for_model(model)
    states = [new_state(model, p, ALL_CASES[name], pool=pool) for p in random_prompts(3, seed=5)]
    logs: list[list[int]] = [[] for _ in states]
    for state, log in zip(states, logs):
        _record_plans(state, log)
    steps = 0
    while any(not s.done for s in states):
        predicted = [s.next_rows() for s in states]
        before = [len(log) for log in logs]
        step(model, states)
        for state, log, rows, n in zip(states, logs, predicted, before):
            if len(log) > n:  # it was stepped
                assert log[-1] == rows, (name, steps)
            else:
                assert state.done and rows == 0
        steps += 1
    assert all(s.next_rows() == 0 for s in states)
    assert steps > 2
