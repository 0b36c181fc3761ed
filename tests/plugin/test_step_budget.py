"""The scheduler books what a step computes, so ``max_num_batched_tokens`` bounds a step's rows.

Each running request is scheduled as many tokens as rows its next step computes (its plan's rows,
within the canvas it has not handed out); a new request is admitted only when its first step, a
forward over its whole canvas, fits in what the running requests leave. With a budget of 64 token
rows and canvases of 35 to 58 rows, requests queue for the budget, every step's rows stay within
it, and every request still gets the core decoder's tokens. One engine for the module; the three
methods share its batches.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from plugin_helpers import (  # noqa: E402
    ENGINE_WIDE,
    GEN_LENGTH,
    METHODS,
    PROMPTS,
    expected,
    make_llm,
    step_until_done,
)

BUDGET = 64  # token rows per step: one whole canvas (35..58 rows) at a time
CASES = ("elastic", "fastdllm", "llada")  # immediate refresh: decisions do not depend on timing


@pytest.fixture(scope="module")
def booked_run(checkpoint):
    """Every prompt under every method through one engine: outputs and the per-step booking."""
    from vllm import SamplingParams

    llm = make_llm(
        checkpoint, max_model_len=BUDGET, max_num_batched_tokens=BUDGET,
        additional_config={"elastic": ENGINE_WIDE},
    )  # fmt: skip
    engine = llm.llm_engine
    llm.collective_rpc("elastic_log_booking")  # before the requests: the engine core steps at once
    for name in CASES:
        params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0,
                                extra_args=dict(METHODS[name]))  # fmt: skip
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(f"{name}-{i}", {"prompt_token_ids": prompt}, params)
    finished = step_until_done(engine)
    (booking,) = llm.collective_rpc("elastic_booking")
    yield finished, [step for step in booking if step]
    del llm


def _method(req_id: str) -> str:
    return next(name for name in CASES if req_id.startswith(name + "-"))


def test_outputs_equal_the_core(booked_run, reference_model):
    finished, _ = booked_run
    for name in CASES:
        got = [finished[f"{name}-{i}"] for i in range(len(PROMPTS))]
        assert got == expected(reference_model, PROMPTS, METHODS[name]), name


def test_running_requests_are_booked_their_rows(booked_run):
    _, booking = booked_run
    # the booking covers an engine step's first denoising step; the others are "continued"
    later = [r for step in booking for r in step.values() if not r["first"] and not r["continued"]]
    assert later
    for r in later:
        assert r["booked"] == max(1, min(r["rows"], r["left"])), r
    # elastic's steps compute a few rows, not the canvas it has left: that is what gets booked
    small = [r for step in booking for req, r in step.items()
             if _method(req) == "elastic" and not r["first"] and r["rows"] < r["left"]]  # fmt: skip
    assert small


def test_every_step_stays_within_the_budget(booked_run):
    _, booking = booked_run
    rows = [sum(r["rows"] for r in step.values()) for step in booking]
    assert max(rows) <= BUDGET, rows
    # the budget is what limits the batch: several requests step together when their rows fit,
    # and no two whole canvases ever do (llada computes its whole canvas every step)
    assert max(len(step) for step in booking) >= 3
    for step in booking:
        full = [req for req, r in step.items() if _method(req) == "llada" or r["first"]]
        assert len(full) <= 1, step
