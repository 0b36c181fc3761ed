"""The GPU worker: vLLM's CUDA ``Worker`` building the diffusion runner through its runner factory.

NOTE: written against vllm 0.32.0's ``gpu_worker.Worker._make_model_runner`` (the seam its docstring
offers to subclasses) and imported on the CPU by the tests, but never run on a GPU in this project:
the GPU machines lent to it have no vLLM (see README, "Status").
"""

from __future__ import annotations

from vllm.v1.worker.gpu_worker import Worker

from .runner import ElasticGPUModelRunner
from .worker import ElasticWorkerMixin


class ElasticGPUWorker(ElasticWorkerMixin, Worker):
    def _make_model_runner(self) -> ElasticGPUModelRunner:
        if self.use_v2_model_runner:  # the config hook refuses it; a last guard here
            raise ValueError("vllm-elastic needs vLLM's V1 model runner")
        return ElasticGPUModelRunner(self.vllm_config, self.device)
