"""A request that reaches its step bound ends with finish_reason "length" and stop_reason
"step_limit", its committed prefix as the text, a log line, and everything it held freed.

The bound is lowered per request with the ``max_steps`` setting, so that a real decode of the tiny
model reaches it (a normal decode never does: every step commits a position).
"""

from __future__ import annotations

import time

import pytest
from server_helpers import MODEL_NAME

PROMPT = "Ben has 4 coins. He buys 3 coins. How many coins does Ben have now?"
MAX_TOKENS = 32
CAPPED = {  # with 1 step llada commits one token somewhere in the block: likely none handed out
    "llada-1-step": {"method": "llada", "steps": 32, "block_length": 32, "max_steps": 1},
    "elastic-2-steps": {"method": "elastic", "window": 4, "threshold": 0.99, "max_steps": 2},
    "fastdllm-2-steps": {"method": "fastdllm", "threshold": 0.99, "max_steps": 2},
}
ELASTIC = {"method": "elastic", "window": 8, "threshold": 0.99}
LIMITED = "vllm_elastic:requests_step_limited_total"


def _core(model, tokenizer, extra: dict):
    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings

    s = DecodeSettings.from_dict({**extra, "gen_length": MAX_TOKENS, "early_stop": True})
    (r,) = generate(model, [tokenizer(PROMPT)["input_ids"]], s)
    return r


@pytest.fixture(scope="module")
def cut_after_tokens(model, tokenizer) -> dict:
    """``ELASTIC`` with the first max_steps at which the last step hands out tokens and the decode
    is still cut short (the scheduler then ends it on those tokens, not on an empty output)."""
    from vllm_elastic.core.generate import new_state, step
    from vllm_elastic.core.settings import DecodeSettings

    s = DecodeSettings.from_dict({**ELASTIC, "gen_length": MAX_TOKENS, "early_stop": True})
    state = new_state(model, tokenizer(PROMPT)["input_ids"], s)
    handed_out = 0
    while not state.done:
        step(model, [state])
        prefix, _ = state.canvas.generated()
        if len(prefix) > handed_out and state.canvas.incomplete():
            return {**ELASTIC, "max_steps": state.steps_taken}
        handed_out = len(prefix)
    raise AssertionError("no step bound cuts this decode after handing out tokens")


def _idle(server, timeout: float = 60.0) -> dict[str, float]:
    names = ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm_elastic:live_decodes")
    deadline = time.monotonic() + timeout
    while True:
        values = {n: server.metric(n) for n in names}
        if not any(values.values()) or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


@pytest.mark.parametrize("name", [*CAPPED, "tokens-in-last-step"])
def test_step_limited_request_ends_with_its_reason(
    server, client, model, tokenizer, cut_after_tokens, name
):
    extra = CAPPED.get(name) or cut_after_tokens
    want = _core(model, tokenizer, extra)
    assert want.step_limited  # the core ends it at the bound with masks left
    before = server.metric(LIMITED)
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        extra_body={"vllm_xargs": extra, "return_token_ids": True},
    )
    choice = out.choices[0]
    assert (choice.finish_reason, choice.stop_reason) == ("length", "step_limit")
    assert choice.token_ids == want.tokens  # the committed prefix, no MASK
    assert server.metric(LIMITED) == before + 1
    assert "reached its step bound" in server.log_tail(400)
    assert not any(_idle(server).values())  # blocks, running slot and decode state freed


def test_step_limited_stream_ends_with_its_reason(
    server, client, model, tokenizer, cut_after_tokens
):
    """NOTE: vLLM sends no chunk at all for a stream that ends with no token (none to carry the
    finish_reason), so this stream is capped where tokens were handed out."""
    extra = cut_after_tokens
    stream = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_body={"vllm_xargs": extra},
    )
    chunks = [c.choices[0] for c in stream if c.choices]
    assert chunks[-1].finish_reason == "length"
    text = "".join(c.text for c in chunks)
    want = _core(model, tokenizer, extra).tokens
    assert want and text.strip() == tokenizer.decode(want, skip_special_tokens=True).strip()
    assert not any(_idle(server).values())
    full = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=MAX_TOKENS)
    assert full.choices[0].finish_reason in ("stop", "length")  # the server goes on
    assert full.choices[0].stop_reason != "step_limit"
