"""vLLM side of vllm-elastic. ``register`` is the ``vllm.general_plugins`` entry point ``elastic``.

vLLM calls it in every process it starts (API server, engine core, workers). It must be cheap and
idempotent. It registers, for the architecture ``LLaDAModelLM``: the HF config class of
``model_type: llada`` (no trust_remote_code), the vLLM model (lazily, by qualname) and the config
hook that picks our worker and scheduler. vLLM only logs a plugin that fails, so it also records
that it ran: ``is_registered()`` in-process, and one line per event in the file named by
``VLLM_ELASTIC_TRACE_FILE`` when that is set (tests read it to see every process of an engine).
"""

from __future__ import annotations

import os

TRACE_ENV = "VLLM_ELASTIC_TRACE_FILE"
MODEL_QUALNAME = "vllm_elastic.plugin.model:LLaDAForDiffusionLM"
TOKENIZER_MODE = "llada"  # selects plugin/renderer.py's LLaDARenderer (the config hook sets it)
HF_TOKENIZER = ("vllm.tokenizers.hf", "CachedHfTokenizer")  # the stock tokenizer of mode "hf"
RENDERER = ("vllm_elastic.plugin.renderer", "LLaDARenderer")

_REGISTERED_PID: int | None = None


def register() -> None:
    global _REGISTERED_PID
    if _REGISTERED_PID == os.getpid():
        return
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry

    from .config import ARCHITECTURE, ElasticConfigHook
    from .hf_config import register_hf_config

    register_hf_config()
    ModelRegistry.register_model(ARCHITECTURE, MODEL_QUALNAME)
    MODELS_CONFIG_MAP[ARCHITECTURE] = ElasticConfigHook
    if TOKENIZER_MODE not in TokenizerRegistry.tokenizers:  # plugin/renderer.py: prompt checks
        TokenizerRegistry.register(TOKENIZER_MODE, *HF_TOKENIZER)
        RENDERER_REGISTRY.register(TOKENIZER_MODE, *RENDERER)
    _REGISTERED_PID = os.getpid()
    trace("register")


def is_registered() -> bool:
    """True once ``register`` has run in this process."""
    return _REGISTERED_PID == os.getpid()


def trace(event: str) -> None:
    """Append ``"<pid> <event>"`` to $VLLM_ELASTIC_TRACE_FILE (a no-op when it is unset)."""
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {event}\n")
