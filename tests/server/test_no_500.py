"""No request makes the server answer 500: a table of malformed and unusual bodies, sent raw to
both endpoints, each gets 200 or 400; then a normal request still gets the text it got before."""

from __future__ import annotations

import json

import httpx
import pytest
from server_helpers import MODEL_NAME

PROMPT = "Ben has 4 coins. How many coins does Ben have?"
NORMAL = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 16}
HUGE = 10**30

# (name, body changes); every one goes to both endpoints. None removes a key.
CASES = {
    # max_tokens
    "max_tokens-1": {"max_tokens": 1},
    "max_tokens-odd": {"max_tokens": 37},
    "max_tokens-0": {"max_tokens": 0},
    "max_tokens-negative": {"max_tokens": -5},
    "max_tokens-huge": {"max_tokens": HUGE},
    "max_tokens-string": {"max_tokens": "ten"},
    "max_tokens-float": {"max_tokens": 3.5},
    "max_tokens-null": {"max_tokens": None},
    # logprobs
    "logprobs-0": {"logprobs": 0},
    "logprobs-5": {"logprobs": 5},
    "logprobs-huge": {"logprobs": HUGE},
    "logprobs-negative": {"logprobs": -3},
    "logprobs-all": {"logprobs": -1},
    "logprobs-true": {"logprobs": True},
    "top_logprobs-5": {"logprobs": True, "top_logprobs": 5},
    "top_logprobs-huge": {"logprobs": True, "top_logprobs": 1000},
    "logprobs-stream": {"logprobs": 2, "stream": True},
    "echo": {"echo": True},
    "echo-logprobs": {"echo": True, "logprobs": 2},
    "prompt_logprobs": {"prompt_logprobs": 2},
    "logprob_token_ids": {"logprobs": 1, "logprob_token_ids": [5, 6]},
    # sampling
    "temperature-0": {"temperature": 0},
    "temperature-2": {"temperature": 2.0, "seed": 3},
    "temperature-huge": {"temperature": 1e30, "seed": 3},
    "temperature-negative": {"temperature": -1},
    "temperature-nan": {"temperature": "NaN"},
    "temperature-string": {"temperature": "hot"},
    "seed-huge": {"seed": HUGE, "temperature": 1.0},
    "seed-negative": {"seed": -7, "temperature": 1.0},
    "seed-float": {"seed": 1.5},
    "top_p": {"top_p": 0.3, "temperature": 1.0},
    "top_p-out-of-range": {"top_p": 7},
    "top_k": {"top_k": 3, "temperature": 1.0},
    "top_k-negative": {"top_k": -9},
    "min_p": {"min_p": 0.2, "temperature": 1.0},
    "n-2": {"n": 2, "temperature": 1.0, "seed": 1},
    "n-0": {"n": 0},
    "n-huge": {"n": HUGE},
    "best_of": {"best_of": 3},
    "use_beam_search": {"use_beam_search": True, "n": 2},
    "presence_penalty": {"presence_penalty": 1.5},
    "frequency_penalty": {"frequency_penalty": -1.5},
    "repetition_penalty": {"repetition_penalty": 1.3},
    "repetition_penalty-0": {"repetition_penalty": 0},
    "logit_bias": {"logit_bias": {"12": 100}},
    "logit_bias-bad-key": {"logit_bias": {"word": 1}},
    "stop": {"stop": ["coins", "."]},
    "stop-empty-string": {"stop": [""]},
    "stop-many": {"stop": [str(i) for i in range(64)]},
    "stop_token_ids": {"stop_token_ids": [1, 2, 3]},
    "stop_token_ids-huge": {"stop_token_ids": [HUGE]},
    "stop_token_ids-negative": {"stop_token_ids": [-1]},
    "min_tokens": {"min_tokens": 4},
    "ignore_eos": {"ignore_eos": True},
    "response_format-json": {"response_format": {"type": "json_object"}},
    "response_format-schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    },
    "response_format-text": {"response_format": {"type": "text"}},
    "structured-regex": {"structured_outputs": {"regex": "[0-9]+"}},
    "suffix": {"suffix": "done"},
    "skip_special_tokens-false": {"skip_special_tokens": False},
    "include_stop_str": {"stop": ["."], "include_stop_str_in_output": True},
    "bad_words": {"bad_words": ["coins"]},
    "allowed_token_ids": {"allowed_token_ids": [10, 11]},
    "truncate_prompt_tokens": {"truncate_prompt_tokens": 3},
    # the diffusion settings
    "xargs-bad-method": {"vllm_xargs": {"method": "beam"}},
    "xargs-steps-huge": {"vllm_xargs": {"method": "llada", "steps": HUGE}},
    "xargs-block-huge": {"vllm_xargs": {"method": "fastdllm", "block_length": HUGE}},
    "xargs-window-huge": {"vllm_xargs": {"window": HUGE}},
    "xargs-seed-huge": {"vllm_xargs": {"seed": HUGE}},
    "xargs-steps-large": {"vllm_xargs": {"method": "llada", "steps": 10**18}},
    "xargs-block-large": {"vllm_xargs": {"method": "fastdllm", "block_length": 10**18}},
    "xargs-seed-largest": {"vllm_xargs": {"seed": 2**64 - 1, "temperature": 1.0}},
    "xargs-logprobs": {"vllm_xargs": {"logprobs": 3}},
    "xargs-temperature-inf": {"vllm_xargs": {"temperature": "inf"}},
    "xargs-not-a-dict": {"vllm_xargs": [1, 2]},
    # the request itself
    "model-unknown": {"model": "no-such-model"},
    "unknown-field": {"colour": "blue"},
}
ALLOWED = {"model-unknown": (404,)}  # OpenAI's answer to a model it does not serve
PROMPTS = {
    "empty": "",
    "spaces": "   ",
    "special-tokens": "<|eot_id|><|startoftext|> hi <|assistant|>",
    "mask-token": "fill <|mdm_mask|> in",
    "unicode": "Ωmega 🚀 \u0000 \udcff",
    "token-ids": [10, 20, 30],
    "token-ids-empty": [],
    "token-ids-mask": [10, 2, 30],
    "token-ids-out-of-vocab": [10, 10**9],
    "token-ids-negative": [-1],
    "list-of-prompts": ["a", "b"],
    "long": "coins " * 2000,
    "number": 42,
    "null": None,
}


def _completion(changes: dict) -> dict:
    return {k: v for k, v in {**NORMAL, **changes}.items() if v is not None}


def _chat(changes: dict) -> dict:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 16, **changes}
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        body["top_logprobs"], body["logprobs"] = body["logprobs"], True
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def before(http):
    """The normal request's text before any unusual one."""
    return http.post("/completions", json=NORMAL).json()["choices"][0]["text"]


def _post(http, path: str, body: dict | bytes) -> int:
    if isinstance(body, bytes):
        r = http.post(path, content=body, headers={"content-type": "application/json"})
    else:
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        r = http.post(path, content=content, headers={"content-type": "application/json"})
    if r.status_code == 200 and "text/event-stream" in r.headers.get("content-type", ""):
        assert '"error"' not in r.text or '"code": 500' not in r.text, r.text[-500:]
    return r.status_code


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_is_200_or_400(http, before, name):
    for path, body in (("/completions", _completion(CASES[name])), ("/chat/completions",
                                                                    _chat(CASES[name]))):
        assert _post(http, path, body) in ALLOWED.get(name, (200, 400)), (name, path)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompt_is_200_or_400(http, before, name):
    prompt = PROMPTS[name]
    assert _post(http, "/completions", _completion({"prompt": prompt})) in (200, 400), name
    if prompt is None or isinstance(prompt, str):
        body = _chat({"messages": [{"role": "user", "content": prompt}]})
        assert _post(http, "/chat/completions", body) in (200, 400), name


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b"\xff\xfe\x00 not utf-8", b'{"prompt": "\xff\xfe"}',
     b'{"model": "llada-tiny", "prompt": "\xc3\x28 bad", "max_tokens": 4}'],
)
def test_broken_body_is_400(http, before, raw):
    for path in ("/completions", "/chat/completions"):
        assert _post(http, path, raw) == 400, (raw, path)


def test_still_serves_the_same_text(http, before):
    assert http.post("/completions", json=NORMAL).json()["choices"][0]["text"] == before
