"""The GPU worker's seam exists in the installed vLLM (it is never run here: no CUDA build of vLLM)."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("vllm")

from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # noqa: E402
from vllm.v1.worker.gpu_worker import Worker  # noqa: E402

from vllm_elastic.plugin.gpu_worker import ElasticGPUWorker  # noqa: E402
from vllm_elastic.plugin.runner import ElasticGPUModelRunner  # noqa: E402


def test_gpu_worker_overrides_the_runner_factory_of_vllms_worker():
    assert "_make_model_runner" in vars(Worker), "vLLM's Worker lost its runner factory seam"
    assert issubclass(ElasticGPUWorker, Worker)
    assert issubclass(ElasticGPUModelRunner, GPUModelRunner)
    # every method the diffusion runner overrides still exists, with the same parameters, on vLLM's
    for name in ("_sample", "_model_forward", "execute_model", "initialize_kv_cache_tensors"):
        ours = inspect.signature(getattr(ElasticGPUModelRunner, name)).parameters
        theirs = inspect.signature(getattr(GPUModelRunner, name)).parameters
        named = [p for p, v in ours.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
        takes_rest = any(v.kind == v.VAR_KEYWORD for v in ours.values())
        assert named == list(theirs)[: len(named)], name
        assert takes_rest or list(theirs) == named, name
