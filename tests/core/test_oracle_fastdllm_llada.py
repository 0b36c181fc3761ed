"""Fast-dLLM and the LLaDA sampler equal independent references, token for token and counter for
counter; and sequences of all three methods decode in one batch as they do alone.

The references (``oracle_reference``) are the authors' loops (NVlabs Fast-dLLM ``generate*``,
ML-GSAI LLaDA ``generate``) written again over one sequence with their own attention and caches.
Every case runs several blocks on prompts of different lengths in one ``generate`` batch and checks
that the path it is named for ran (parallel commits, EOS for some prompts and not others, fewer
forwards with ``early_stop``).
"""

from __future__ import annotations

import pytest
from oracle_elastic_reference import elastic_reference
from oracle_reference import (
    assert_same_decode,
    fastdllm_reference,
    llada_reference,
    one_thread,
    small_model,
)
from random_llada import MASK_ID, random_prompts

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings

EOS = 60  # an id this random model commits for some of the prompts and not for the others
FAST = dict(gen_length=48, block_length=16, threshold=0.3)  # three blocks
# 10 steps per block for 16 masks: the first 6 steps commit 2 tokens, the last 4 one
LLADA = dict(gen_length=48, block_length=16, steps=30)

REFERENCES = {"fastdllm": fastdllm_reference, "llada": llada_reference}

# id -> (method, knobs, what the case must exercise): "eos": some prompts end by EOS and some do
# not; "parallel": a step commits several tokens; early_stop: some prompt needs fewer forwards.
CASES = {
    "fastdllm-none": ("fastdllm", dict(FAST, cache="none"), {"eos", "parallel"}),
    "fastdllm-prefix": ("fastdllm", dict(FAST, cache="prefix"), {"eos", "parallel"}),
    "fastdllm-dual": ("fastdllm", dict(FAST, cache="dual"), {"eos", "parallel"}),
    "fastdllm-prefix-early-stop": (
        "fastdllm",
        dict(FAST, cache="prefix", early_stop=True),
        {"eos"},
    ),
    "fastdllm-dual-early-stop": ("fastdllm", dict(FAST, cache="dual", early_stop=True), {"eos"}),
    "fastdllm-dual-top-k": ("fastdllm", dict(FAST, cache="dual", tokens_per_step=3), set()),
    "llada-low-confidence": ("llada", dict(LLADA), {"eos"}),
    "llada-low-confidence-early-stop": ("llada", dict(LLADA, early_stop=True), {"eos"}),
    "llada-random": ("llada", dict(LLADA, remasking="random", seed=7), {"eos"}),
    "llada-gumbel": ("llada", dict(LLADA, temperature=0.5, seed=3), {"eos"}),
    "llada-gumbel-random": ("llada", dict(LLADA, temperature=0.5, remasking="random"), set()),
}


@pytest.fixture(scope="module")
def model():
    return small_model(seed=0, eos_id=EOS)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(4, seed=1, lo=4, hi=24)  # lengths 8, 18, 12, 21


@pytest.mark.parametrize("case", list(CASES))
def test_equals_reference(model, prompts, case):
    method, knobs, needs = CASES[case]
    results = generate(model, prompts, DecodeSettings(method=method, **knobs))
    traces = [REFERENCES[method](model, p, **knobs) for p in prompts]
    for i, (trace, result) in enumerate(zip(traces, results, strict=True)):
        assert_same_decode(trace, result, MASK_ID, EOS, f"prompt {i}")
    ended = [t.output(MASK_ID, EOS)[1] for t in traces]
    assert "eos" not in needs or set(ended) == {True, False}, ended
    assert "parallel" not in needs or max(t.max_commit for t in traces) > 1
    if knobs.get("early_stop"):  # the same answers in fewer forwards where EOS came early
        full = [REFERENCES[method](model, p, **dict(knobs, early_stop=False)) for p in prompts]
        assert [t.output(MASK_ID, EOS) for t in traces] == [f.output(MASK_ID, EOS) for f in full]
        assert any(t.nfe < f.nfe for t, f in zip(traces, full, strict=True))


def test_three_methods_in_one_batch(model, prompts):
    """Each sequence of a mixed batch decodes as its method's reference does alone."""
    plan = [
        (
            "elastic",
            elastic_reference,
            dict(gen_length=48, window=8, threshold=0.3, gamma=0.9, refresh_mode="deferred"),
        ),
        ("fastdllm", fastdllm_reference, dict(FAST, cache="dual")),
        ("llada", llada_reference, dict(LLADA)),
        (
            "elastic",
            elastic_reference,
            dict(gen_length=32, window=4, threshold=0.3, gamma=0.9, track_num=3),
        ),
    ]
    settings = [DecodeSettings(method=m, **k) for m, _, k in plan]
    results = generate(model, prompts, settings)
    for i, ((_, reference, knobs), prompt, result) in enumerate(
        zip(plan, prompts, results, strict=True)
    ):
        assert_same_decode(reference(model, prompt, **knobs), result, MASK_ID, EOS, f"seq {i}")
