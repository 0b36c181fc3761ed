"""The OpenAI server (``vllm-elastic serve``) with the real ``openai`` client: completions, chat,
per-request settings through ``vllm_xargs`` and streaming give the core decoder's tokens."""

from __future__ import annotations

import pytest
from server_helpers import MODEL_NAME, expected_tokens

MAX_TOKENS = 32
PROMPT = "Ben has 4 coins. He buys 3 coins. How many coins does Ben have now?"
SETTINGS = {
    "default": {},
    "elastic": {"method": "elastic", "gamma": 0.9, "window": 16, "threshold": 0.9},
    "llada": {"method": "llada", "steps": 16, "block_length": 16},
    "fastdllm": {"method": "fastdllm", "threshold": 0.8},
}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_completion_equals_core(client, model, tokenizer, name):
    extra = SETTINGS[name]
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        extra_body={"vllm_xargs": extra, "return_token_ids": True},
    )
    choice = out.choices[0]
    want = expected_tokens(model, _ids(tokenizer, PROMPT), MAX_TOKENS, extra)
    assert choice.token_ids == want
    assert choice.text == tokenizer.decode(want, skip_special_tokens=True)  # the output as it is
    assert choice.finish_reason == ("stop" if want[-1] == model.config.eos_token_id else "length")


def test_chat_equals_core(client, model, tokenizer):
    messages = [{"role": "user", "content": PROMPT}]
    extra = SETTINGS["elastic"]
    out = client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=MAX_TOKENS,
        extra_body={"vllm_xargs": extra, "return_token_ids": True},
    )
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want = expected_tokens(model, _ids(tokenizer, prompt), MAX_TOKENS, extra)
    choice = out.choices[0]
    assert choice.token_ids == want
    assert choice.message.content == tokenizer.decode(want, skip_special_tokens=True)
    assert choice.message.content.strip()  # the tiny model answers in words


def test_stream_joins_to_the_same_text(client):
    """Chunks arrive as the committed prefix grows: several of them, joined = the whole text."""
    messages = [{"role": "user", "content": PROMPT}]
    extra = {"method": "llada", "steps": MAX_TOKENS, "block_length": MAX_TOKENS // 2}  # 1/step
    whole = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=MAX_TOKENS, extra_body={"vllm_xargs": extra}
    )
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_body={"vllm_xargs": extra},
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) >= 2


def test_completion_stream_token_by_token(client):
    extra = {"method": "llada", "steps": MAX_TOKENS}
    args = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    whole = client.completions.create(**args, extra_body={"vllm_xargs": extra})
    stream = client.completions.create(**args, stream=True, extra_body={"vllm_xargs": extra})
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert "".join(pieces) == whole.choices[0].text
    assert sum(1 for p in pieces if p) >= 2
