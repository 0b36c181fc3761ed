"""The LLaDA config for vLLM and the per-architecture hook that picks our runner and scheduler.

``LLaDAHFConfig`` (``hf_config.py``, free of vllm imports) lets ``transformers.AutoConfig`` read a
LLaDA ``config.json`` without ``trust_remote_code``.

``ElasticConfigHook`` is the ``MODELS_CONFIG_MAP`` entry for ``LLaDAModelLM``. vLLM runs it once, in
the front-end process, while it builds the ``VllmConfig``; the engine core and the workers receive
the updated config (``vllm/model_executor/models/config.py``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from transformers.configuration_utils import PreTrainedConfig
from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

from ..core.config import LLaDAConfig
from ..core.settings import DecodeSettings
from . import TOKENIZER_MODE, patches, settings

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = init_logger("vllm.plugins.elastic")  # under "vllm": printed with vLLM's own log format

ARCHITECTURE = "LLaDAModelLM"
WORKER_CLS = "vllm_elastic.plugin.worker.ElasticCPUWorker"
GPU_WORKER_CLS = "vllm_elastic.plugin.gpu_worker.ElasticGPUWorker"
SCHEDULER_CLS = "vllm_elastic.plugin.scheduler.ElasticScheduler"


def core_config(hf_config: PreTrainedConfig) -> LLaDAConfig:
    """The core's LLaDAConfig of a vLLM hf_config (the model's single source of architecture)."""
    return LLaDAConfig.from_dict(hf_config.to_dict())


class ElasticConfigHook(VerifyAndUpdateConfig):
    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        """Pick our worker and scheduler; turn off what a re-computed canvas cannot use."""
        defaults = settings.set_engine_defaults(vllm_config)  # bad additional_config fails here
        par, sched, cache = (
            vllm_config.parallel_config,
            vllm_config.scheduler_config,
            vllm_config.cache_config,
        )
        model = vllm_config.model_config
        # Tensor parallel is supported (heads sharded; statistics all-reduced, core/forward.py).
        _check_ray(par)
        if par.pipeline_parallel_size != 1:
            raise NotImplementedError(
                "vllm-elastic runs with pipeline parallel size 1: a refresh can restart at any "
                "layer, so every stage would wait on the others (use tensor parallel instead)"
            )
        par.worker_cls = _worker_cls(vllm_config)
        sched.scheduler_cls = SCHEDULER_CLS
        turned_off = []
        if cache.enable_prefix_caching:
            cache.enable_prefix_caching = False
            turned_off.append("prefix caching (a refresh rewrites prompt K/V)")
        if sched.enable_chunked_prefill:
            sched.enable_chunked_prefill = False
            turned_off.append("chunked prefill (the first step sees the whole canvas at once)")
        # Each step schedules a request's whole remaining canvas: one canvas must fit the budget.
        sched.max_num_batched_tokens = max(model.max_model_len, sched.max_num_batched_tokens)
        processors = list(model.logits_processors or [])
        if settings.VALIDATOR_QUALNAME not in processors:
            model.logits_processors = [*processors, settings.VALIDATOR_QUALNAME]
        if model.tokenizer_mode in ("auto", "hf"):  # prompt checks of plugin/renderer.py
            model.tokenizer_mode = TOKENIZER_MODE
        _default_temperature(model, defaults.temperature)
        patches.apply_prompt_free_detokenizer()
        logger.info(
            "vllm-elastic: %s uses worker %s and scheduler %s; turned off: %s; default method %s; "
            "defaults other than the authors' (checkpoint, then additional_config): %s",
            ARCHITECTURE,
            par.worker_cls,
            SCHEDULER_CLS,
            ", ".join(turned_off) or "nothing",
            defaults.method,
            _changed(defaults) or "none",
        )


def _changed(defaults: DecodeSettings) -> str:
    """The settings where ``defaults`` differ from the authors' (``DecodeSettings()``)."""
    authors = DecodeSettings()
    names = [f.name for f in dataclasses.fields(DecodeSettings)]
    changed = [n for n in names if getattr(defaults, n) != getattr(authors, n)]
    return ", ".join(f"{n}={getattr(defaults, n)!r}" for n in changed)


def _worker_cls(vllm_config: VllmConfig) -> str:
    """Our CPU worker, or on CUDA our GPU worker with what a re-run canvas needs there: eager mode
    (the runner replaces the forward of a real step, so no CUDA graph may capture it) and synchronous
    scheduling (the next step's drafts depend on this step's committed tokens)."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return WORKER_CLS
    if vllm_config.use_v2_model_runner:
        raise ValueError(
            "vllm-elastic needs vLLM's V1 model runner (unset VLLM_USE_V2_MODEL_RUNNER)"
        )
    vllm_config.model_config.enforce_eager = True
    vllm_config.scheduler_config.async_scheduling = False
    return GPU_WORKER_CLS


def _default_temperature(model, temperature: float) -> None:
    """A request that sets no temperature decodes at the engine's (0, greedy, unless
    ``additional_config`` says otherwise), as LLaDA's reference sampler does, instead of vLLM's
    fallback of 1.0; a ``generation_config.json`` that names one is kept."""
    if "temperature" in model.override_generation_config:
        return
    if model.generation_config != "vllm" and "temperature" in model.try_get_generation_config():
        return
    model.override_generation_config = {
        **model.override_generation_config,
        "temperature": temperature,
    }


def _check_ray(par) -> None:
    """Refuse Ray where vLLM cannot place Ray workers, here rather than inside the engine process.

    vLLM raises the same reason while the engine core starts its executor; the user then sees only
    "Engine core initialization failed" (``vllm/v1/engine/utils.py``). Ray is the multi-GPU path.
    """
    from vllm.platforms import current_platform

    if par.distributed_executor_backend == "ray" and not current_platform.ray_device_key:
        raise ValueError(
            f"current platform {current_platform.device_name} does not support ray; "
            "vllm-elastic runs tensor parallel on the CPU with distributed_executor_backend='mp' "
            "(and VLLM_CPU_OMP_THREADS_BIND=nobind)"
        )
