"""Memory pressure: with KV blocks for only two canvases, eight requests queue and all finish right.

The scheduler admits a request only when blocks for its whole canvas (prompt + max_tokens) fit, so a
running canvas never has to be preempted to grow; while requests queue, an engine step runs one
denoising step, so that they are admitted as soon as a canvas ends. One engine for the module.
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

BLOCK_SIZE = 128  # every canvas here (<= 26 + 32 tokens) takes one block
NUM_BLOCKS = 2  # room for two canvases at a time


@pytest.fixture(scope="module")
def small_llm(checkpoint):
    engine = make_llm(
        checkpoint,
        max_model_len=BLOCK_SIZE * NUM_BLOCKS,
        block_size=BLOCK_SIZE,
        num_gpu_blocks_override=NUM_BLOCKS + 1,  # + vLLM's null block
        additional_config={"elastic": ENGINE_WIDE},
    )
    yield engine
    del engine


def test_eight_requests_queue_for_two_canvases(small_llm, reference_model):
    from vllm import SamplingParams

    prompts = (PROMPTS + PROMPTS)[:8]
    extra = METHODS["elastic"]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    engine = small_llm.llm_engine
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), {"prompt_token_ids": prompt}, params)
    live = []  # in-flight decodes on the worker after each step

    def sample_live() -> None:
        (info,) = small_llm.collective_rpc("elastic_info")
        live.append(info["live_decodes"])

    finished = step_until_done(engine, sample_live)
    most_running = max(live)
    assert [finished[str(i)] for i in range(8)] == expected(reference_model, prompts, extra)
    assert most_running == NUM_BLOCKS  # queued, yet never more canvases in flight than fit


def test_one_denoising_step_per_engine_step_while_requests_wait(small_llm):
    """An engine step runs several denoising steps (``steps_per_schedule``) only when no request
    waits for admission: queued requests are admitted after one step, as without the setting."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0,  # not streamed: a stream
                            output_kind=RequestOutputKind.FINAL_ONLY,  # gets every step
                            extra_args=dict(METHODS["elastic"]))  # fmt: skip
    engine = small_llm.llm_engine
    small_llm.collective_rpc("elastic_log_booking")
    small_llm.collective_rpc("elastic_metrics_drain")  # observations from here on
    # all queued before the first step: the engine core steps as soon as a request arrives, and
    # a first request alone, with nothing queued yet, may rightly run several steps
    engine.engine_core.call_utility("pause_scheduler", "keep", False)
    try:
        for i, prompt in enumerate((PROMPTS + PROMPTS)[:8]):
            engine.add_request(f"wait-{i}", {"prompt_token_ids": prompt}, params)
    finally:
        engine.engine_core.call_utility("resume_scheduler")
    finished = step_until_done(engine)
    (booking,) = small_llm.collective_rpc("elastic_booking")
    (metrics,) = small_llm.collective_rpc("elastic_metrics_drain")
    # /metrics observes each denoising step, not each engine step: one per request and step,
    # and every token handed out in exactly one of them
    assert len(metrics["tokens_per_step"]) == sum(r["nfe"] for r in metrics["requests"])
    assert sum(metrics["tokens_per_step"]) == sum(len(t) for t, _ in finished.values())
    steps = [step for step in booking if step]
    seen: set[str] = set()
    continued = 0
    for step in steps:
        seen |= set(step)
        if any(r["continued"] for r in step.values()):
            continued += 1
            assert len(seen) == 8, "a continued step ran while requests were still queued"
    assert continued  # once the queue is empty, the last requests run several steps at a time
