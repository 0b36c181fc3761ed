"""The workers that run the diffusion runner. vLLM's ``CPUWorker.init_device`` builds a stock
``CPUModelRunner`` with no factory hook, so this override replaces it right after
(``vllm/v1/worker/cpu_worker.py``); the stock runner is cheap to build and is dropped before it
loads a model. The GPU worker (``gpu_worker.py``) uses the GPU ``Worker``'s own factory,
``_make_model_runner``."""

from __future__ import annotations

import torch
from vllm.v1.worker.cpu_worker import CPUWorker

from .runner import ElasticCPUModelRunner


class ElasticWorkerMixin:
    """The worker RPCs of the plugin (``collective_rpc``), for the CPU and the GPU worker."""

    def elastic_info(self) -> dict:
        """What tests read through ``collective_rpc``: the plugin is loaded and wired here."""
        import os

        from . import is_registered

        return {
            "pid": os.getpid(),
            "registered": is_registered(),
            "runner": type(self.model_runner).__name__,
            "live_decodes": len(getattr(self.model_runner, "decodes", {})),
            "tp_rank": self.rank,  # the worker's global rank (= TP rank: no pipeline parallel)
            "decisions": self.model_runner.decisions.hexdigest(),
            "decision_steps": self.model_runner.decisions.steps,
        }

    def elastic_count_steps(self, steps: int) -> None:
        """Count the aten ops and host syncs of the next ``steps`` engine steps that decode
        (``core/op_count.py``); ``elastic_step_counts`` returns them."""
        self.model_runner.steps_to_count = steps
        self.model_runner.step_counts = []

    def elastic_step_counts(self) -> list[dict]:
        return list(self.model_runner.step_counts)

    def elastic_bare_rows_per_s(self, batches: list[int], length: int) -> dict:
        """The layer-rows per second of a bare no-cache forward of the served checkpoint at each
        batch of ``length``-token canvases (``core/bare_forward.py``), timed here: on the threads
        and cores vLLM bound this worker to, as the engine's own steps (``bench/efficiency.py``)."""
        from ..core.bare_forward import bare_rows_per_s
        from ..core.checkpoint import load_model

        model = load_model(self.model_config.model)
        rows = {b: bare_rows_per_s(model, b, length) for b in batches}
        return {"threads": torch.get_num_threads(), "rows_per_s": rows}

    def elastic_log_booking(self) -> None:
        """From the next step on, record per step what the scheduler booked for each request
        beside the rows its step computes; ``elastic_booking`` returns the record."""
        self.model_runner.booking = []

    def elastic_booking(self) -> list[dict]:
        return list(self.model_runner.booking or [])

    def elastic_metrics_drain(self) -> dict | None:
        """Observations for the server's /metrics since the last call (``plugin/metrics.py``);
        None on ranks other than 0 (every TP rank makes the same decisions)."""
        if self.rank != 0:
            return None
        runner = self.model_runner
        return runner.pending_metrics.drain(live_decodes=len(runner.decodes))

    def elastic_request_stats(self, request_ids: list[str]) -> list[dict | None]:
        """Compute stats of finished requests (``plugin.stats.request_stats`` calls this)."""
        return self.model_runner.recent_stats.lookup(request_ids)

    def elastic_kv_blocks(self, request_id: str, layer: int) -> dict:
        """A running request's blocks, read from the KV tensors vLLM's attention layers are bound
        to (tests check that the request's caches live there). ``request_id``: as given to vLLM,
        or vLLM's internal id."""
        runner = self.model_runner
        (req_id,) = [
            r for r in runner.requests if r == request_id or r.startswith(request_id + "-")
        ]
        block_ids = runner.requests[req_id].block_ids[runner.paged_group]
        layers = runner.compilation_config.static_forward_context
        block = runner.get_model().blocks[layer]
        return {
            "block_ids": list(block_ids),
            "attn": layers[block.attn.layer_name].kv_cache[block_ids].clone(),
            "refresh_state": layers[block.refresh_state.layer_name].kv_cache[block_ids].clone(),
        }


class ElasticCPUWorker(ElasticWorkerMixin, CPUWorker):
    def init_device(self) -> None:
        super().init_device()
        self.model_runner = ElasticCPUModelRunner(self.vllm_config, torch.device("cpu"))
