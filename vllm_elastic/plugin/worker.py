"""The worker that runs the diffusion runner (CPU). vLLM's ``CPUWorker.init_device`` builds a stock
``CPUModelRunner`` with no factory hook, so this override replaces it right after (research/
vllm_v1_hooks.md Q1); the stock runner is cheap to build and is dropped before it loads a model."""

from __future__ import annotations

import torch
from vllm.v1.worker.cpu_worker import CPUWorker

from .runner import ElasticCPUModelRunner


class ElasticCPUWorker(CPUWorker):
    def init_device(self) -> None:
        super().init_device()
        self.model_runner = ElasticCPUModelRunner(self.vllm_config, torch.device("cpu"))

    def elastic_info(self) -> dict:
        """What tests read through ``collective_rpc``: the plugin is loaded and wired here."""
        import os

        from . import is_registered

        return {
            "pid": os.getpid(),
            "registered": is_registered(),
            "runner": type(self.model_runner).__name__,
            "live_decodes": len(getattr(self.model_runner, "decodes", {})),
        }
