"""``/metrics`` carries the Elastic-Cache counters (equal to the core's ComputeStats), and a client
that disconnects mid-stream frees its request's KV blocks (vLLM's KV usage gauge returns)."""

from __future__ import annotations

import time

from server_helpers import MODEL_NAME

PROMPTS = ["Ben has 4 coins. He buys 3 coins.", "Sam has 9 apples and eats 2."]
MAX_TOKENS = 32
ELASTIC = {"method": "elastic", "gamma": 0.9, "window": 16, "threshold": 0.9}
USAGE = "vllm:kv_cache_usage_perc"
FINISHED = "vllm:request_success_total"  # a client's abort is not counted here
SLOW_TOKENS = 448


def _metrics(server) -> dict[str, float]:
    names = [
        "vllm_elastic:requests_total",
        "vllm_elastic:request_nfe_count",
        "vllm_elastic:request_nfe_sum",
        "vllm_elastic:request_layer_row_fraction_sum",
        "vllm_elastic:tokens_committed_per_step_count",
        "vllm_elastic:tokens_committed_per_step_sum",
        "vllm_elastic:layer_refreshes_total",
    ]
    return {n: server.metric(n) for n in names}


def test_elastic_counters_on_metrics(server, client, model, tokenizer):
    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings

    text = server.get("/metrics")
    for name in ("request_nfe", "request_layer_row_fraction", "tokens_committed_per_step"):
        assert f"# TYPE vllm_elastic:{name} histogram" in text
    before = _metrics(server)
    outs = [
        client.completions.create(
            model=MODEL_NAME, prompt=p, max_tokens=MAX_TOKENS, extra_body={"vllm_xargs": ELASTIC}
        )
        for p in PROMPTS
    ]
    after = _metrics(server)
    delta = {k: after[k] - before[k] for k in after}

    s = DecodeSettings.from_dict({**ELASTIC, "gen_length": MAX_TOKENS, "early_stop": True})
    core = [r.stats for r in generate(model, [tokenizer(p)["input_ids"] for p in PROMPTS], s)]
    assert delta["vllm_elastic:requests_total"] == len(PROMPTS)
    assert delta["vllm_elastic:request_nfe_count"] == len(PROMPTS)
    assert delta["vllm_elastic:request_nfe_sum"] == sum(c.nfe for c in core)
    fraction = sum(c.layer_token_fraction for c in core)
    assert abs(delta["vllm_elastic:request_layer_row_fraction_sum"] - fraction) < 1e-9
    assert delta["vllm_elastic:layer_refreshes_total"] == sum(sum(c.refreshes) for c in core)
    # every output token (the EOS included) was committed in exactly one step
    completion = sum(o.usage.completion_tokens for o in outs)
    assert delta["vllm_elastic:tokens_committed_per_step_sum"] == completion
    assert delta["vllm_elastic:tokens_committed_per_step_count"] == sum(c.nfe for c in core)


def _wait_for(server, name: str, want, timeout: float = 60.0, label: str = "") -> float:
    deadline = time.monotonic() + timeout
    value = server.metric(name, label)
    while not want(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = server.metric(name, label)
    return value


def test_disconnect_mid_stream_frees_kv_blocks(server, client):
    baseline = server.metric(USAGE)
    finished = server.metric(FINISHED)  # requests that ran to their end (any reason)
    # one block, one token per step: the model fills its EOS tail first, so this takes seconds
    slow = {"method": "llada", "steps": SLOW_TOKENS, "block_length": SLOW_TOKENS}
    stream = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPTS[0],
        max_tokens=SLOW_TOKENS,
        stream=True,
        extra_body={"vllm_xargs": slow},
    )  # returns once the response has started
    busy = _wait_for(server, USAGE, lambda v: v > baseline)
    assert busy > baseline  # the running request holds its whole canvas's blocks
    stream.close()  # the client goes away mid-stream: vLLM aborts the request
    assert _wait_for(server, "vllm:num_requests_running", lambda v: v == 0) == 0
    assert _wait_for(server, USAGE, lambda v: v == baseline) == baseline  # every block is free
    assert server.metric(FINISHED) == finished  # it was aborted, not run to its end
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=8)
    assert out.choices[0].finish_reason in ("stop", "length")  # and it keeps serving
