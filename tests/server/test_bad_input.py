"""Bad input gets HTTP 400 with a message naming the problem, and the server keeps serving."""

from __future__ import annotations

import openai
import pytest
from server_helpers import MAX_MODEL_LEN, MODEL_NAME

PROMPT = "Ben has 4 coins."
MAX_TOKENS = 16

# (vllm_xargs, a fragment the 400's message must contain)
BAD_SETTINGS = {
    "unknown-method": ({"method": "beam"}, "unknown method 'beam'"),
    "gamma-above-1": ({"gamma": 1.5}, "gamma must be in [0, 1]"),
    "gamma-negative": ({"gamma": -0.1}, "gamma must be in [0, 1]"),
    "window-zero": ({"window": 0}, "window must be > 0"),
    "window-negative": ({"window": -4}, "window must be > 0"),
    "full-refresh-every-zero": ({"full_refresh_every": 0}, "full_refresh_every must be > 0"),
    "threshold-zero": ({"threshold": 0}, "threshold must be in (0, 1]"),
    "threshold-above-1": ({"threshold": 1.01}, "threshold must be in (0, 1]"),
    "gamma-not-a-number": ({"gamma": "high"}, "'gamma' must be float"),
    "window-not-a-number": ({"window": "wide"}, "'window'"),
    "unknown-setting": ({"gama": 0.5}, "gama"),
}


def _bad(client, **kwargs) -> str:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL_NAME, **kwargs)
    assert info.value.status_code == 400
    return info.value.message


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_setting_is_400(client, name):
    xargs, fragment = BAD_SETTINGS[name]
    message = _bad(client, prompt=PROMPT, max_tokens=MAX_TOKENS, extra_body={"vllm_xargs": xargs})
    assert fragment in message


def test_canvas_beyond_max_model_len_is_400(client, tokenizer):
    n = len(tokenizer(PROMPT)["input_ids"])
    message = _bad(client, prompt=PROMPT, max_tokens=MAX_MODEL_LEN - n + 1)
    assert "max_tokens" in message and f"at most {MAX_MODEL_LEN - n}" in message
    chat = [{"role": "user", "content": PROMPT}]
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        client.chat.completions.create(model=MODEL_NAME, messages=chat, max_tokens=MAX_MODEL_LEN)


def test_canvas_that_just_fits_is_served(client, tokenizer):
    n = len(tokenizer(PROMPT)["input_ids"])
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=MAX_MODEL_LEN - n,
        extra_body={"vllm_xargs": {"method": "elastic"}},  # any canvas length
    )
    assert out.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("where", ["text", "token_ids", "chat"])
def test_prompt_with_the_mask_token_is_400(client, tokenizer, where):
    mask_text = tokenizer.mask_token  # "<|mdm_mask|>"
    if where == "chat":
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL_NAME,
                messages=[{"role": "user", "content": f"fill {mask_text} in"}],
                max_tokens=MAX_TOKENS,
            )
        message = info.value.message
    else:
        prompt = f"Ben has {mask_text} coins."
        if where == "token_ids":
            prompt = tokenizer(prompt)["input_ids"]
        message = _bad(client, prompt=prompt, max_tokens=MAX_TOKENS)
    assert "mask token" in message and mask_text in message


def test_server_keeps_serving(client):
    """After every rejection above, a good request still completes."""
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=MAX_TOKENS)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens >= 1
