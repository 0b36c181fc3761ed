"""What an OpenAI client expects of ``vllm-elastic serve``: any max_tokens for every method,
logprobs recorded at commit (also streamed), the sampling parameters honoured or refused with a
400 naming them, and text that is the model's output as it is."""

from __future__ import annotations

import openai
import pytest
from server_helpers import MODEL_NAME, expected_logprobs, expected_tokens

PROMPT = "Ben has 4 coins. He buys 3 coins. How many coins does Ben have now?"
CHAT = [{"role": "user", "content": PROMPT}]
TOP_K = 3
# several tokens committed in one step, in varying numbers, so logprob rows must follow tokens
MANY_PER_STEP = {
    "fastdllm": {"method": "fastdllm", "threshold": 0.5, "block_length": 16},
    "elastic": {"method": "elastic", "threshold": 0.5},
    "llada": {"method": "llada", "steps": 8, "block_length": 16},
}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def _chat_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    return _ids(tokenizer, text)


@pytest.mark.parametrize("method", ["llada", "fastdllm", "elastic"])
@pytest.mark.parametrize("max_tokens", [1, 7, 40])
def test_any_max_tokens_for_every_method(client, model, tokenizer, method, max_tokens):
    """Canvases that are not a multiple of block_length (16 here): the last block is shorter."""
    extra = {"method": method, "block_length": 16}
    out = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=max_tokens,
        extra_body={"vllm_xargs": extra, "return_token_ids": True},
    )
    want = expected_tokens(model, _ids(tokenizer, PROMPT), max_tokens, extra)
    assert out.choices[0].token_ids == want


def test_text_is_the_output_as_it_is(client, tokenizer):
    """No separator from the prompt's context: the text decodes the output ids alone."""
    out = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=32, extra_body={"return_token_ids": True}
    )
    choice = out.choices[0]
    assert choice.text == tokenizer.decode(choice.token_ids, skip_special_tokens=True)
    assert choice.text and not choice.text[0].isspace()


@pytest.mark.parametrize("name", list(MANY_PER_STEP))
def test_completion_logprobs_are_the_commit_steps(client, model, tokenizer, name):
    extra = MANY_PER_STEP[name]
    out = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=32, logprobs=TOP_K,
        extra_body={"vllm_xargs": extra, "return_token_ids": True,
                    "return_tokens_as_token_ids": True},
    )
    choice = out.choices[0]
    want_tokens, records = expected_logprobs(model, _ids(tokenizer, PROMPT), 32, extra, TOP_K)
    assert choice.token_ids == want_tokens
    lp = choice.logprobs
    assert lp.tokens == [f"token_id:{t}" for t in want_tokens]
    assert lp.token_logprobs == pytest.approx([r.logprob for r in records], abs=1e-4)
    for got, rec in zip(lp.top_logprobs, records):
        want = {f"token_id:{t}": v for t, v in zip(rec.top_ids, rec.top_logprobs)}
        want[f"token_id:{rec.token}"] = rec.logprob  # vLLM lists the chosen token too
        assert got.keys() == want.keys()
        assert [got[t] for t in want] == pytest.approx(list(want.values()), abs=1e-4)


def test_chat_logprobs_streamed_and_whole(client, model, tokenizer):
    extra = MANY_PER_STEP["elastic"]
    args = dict(
        model=MODEL_NAME, messages=CHAT, max_tokens=32, logprobs=True, top_logprobs=TOP_K,
        extra_body={"vllm_xargs": extra, "return_token_ids": True},
    )
    whole = client.chat.completions.create(**args).choices[0]
    want_tokens, records = expected_logprobs(model, _chat_ids(tokenizer), 32, extra, TOP_K)
    assert whole.token_ids == want_tokens
    content = whole.logprobs.content
    assert len(content) == len(records)  # one per output token, the EOS included
    for entry, rec in zip(content, records):
        assert entry.logprob == pytest.approx(rec.logprob, abs=1e-4)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(rec.top_logprobs, abs=1e-4)
    streamed = [
        e for c in client.chat.completions.create(**args, stream=True)
        if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert [e.logprob for e in streamed] == [e.logprob for e in content]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_seed_reproduces_a_sampled_answer(client):
    def run(seed):
        out = client.completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=24, temperature=1.5, seed=seed,
            extra_body={"return_token_ids": True},
        )
        return out.choices[0].token_ids

    a, b = run(7), run(7)
    assert a == b
    assert any(run(s) != a for s in (8, 9, 10))  # another seed, another draw


def test_default_temperature_is_greedy(client, model, tokenizer):
    out = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=24, extra_body={"return_token_ids": True}
    )
    assert out.choices[0].token_ids == expected_tokens(model, _ids(tokenizer, PROMPT), 24, {})


def test_n_choices(client):
    out = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=16, n=3, temperature=1.0, seed=1
    )
    assert len(out.choices) == 3 and sorted(c.index for c in out.choices) == [0, 1, 2]


def test_stop_string_and_stop_token(client, model, tokenizer):
    base = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=32, extra_body={"return_token_ids": True}
    ).choices[0]
    words = base.text.split()
    assert len(words) >= 3
    stop = words[2]
    cut = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=32, stop=[stop]
    ).choices[0]
    assert cut.text == base.text[: base.text.index(stop)]
    assert cut.finish_reason == "stop"
    token = base.token_ids[1]
    by_id = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=32,
        extra_body={"stop_token_ids": [token], "return_token_ids": True},
    ).choices[0]
    assert by_id.token_ids == base.token_ids[: base.token_ids.index(token) + 1]
    assert by_id.finish_reason == "stop"


REFUSED = {
    "top_p": {"top_p": 0.5, "temperature": 1.0},
    "top_k": {"extra_body": {"top_k": 5}, "temperature": 1.0},
    "min_p": {"extra_body": {"min_p": 0.1}, "temperature": 1.0},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "repetition_penalty": {"extra_body": {"repetition_penalty": 1.2}},
    "logit_bias": {"logit_bias": {"10": 5}},
    "min_tokens": {"extra_body": {"min_tokens": 4}},
    "ignore_eos": {"extra_body": {"ignore_eos": True}},
    "prompt_logprobs": {"extra_body": {"prompt_logprobs": 1}},
    "structured_outputs": {"extra_body": {"structured_outputs": {"regex": "[0-9]+"}}},
    "allowed_token_ids": {"extra_body": {"allowed_token_ids": [10, 11]}},
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsupported_parameter_is_400_naming_it(client, name):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, **REFUSED[name])
    assert name in info.value.message


def test_echo_with_logprobs_is_400_and_plain_echo_works(client):
    with pytest.raises(openai.BadRequestError, match="prompt_logprobs.*echo"):
        client.completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=8, echo=True, logprobs=1
        )
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, echo=True)
    assert out.choices[0].text.startswith(PROMPT)


def test_response_format_json_is_400(client):
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(
            model=MODEL_NAME, messages=CHAT, max_tokens=8, response_format={"type": "json_object"}
        )


def test_defaults_a_client_sends_pass(client):
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=CHAT, max_tokens=8, temperature=0, top_p=1,
        presence_penalty=0, frequency_penalty=0, n=1, stop=None, logprobs=False,
    )
    assert out.choices[0].finish_reason in ("stop", "length")
