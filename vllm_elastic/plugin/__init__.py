"""vLLM side of vllm-elastic. ``register`` is the ``vllm.general_plugins`` entry point ``elastic``.

vLLM calls it in every process it starts (API server, engine core, workers). It must be cheap and
idempotent: it imports nothing heavy and records that it ran, so that tests can assert the plugin
loaded (vLLM only logs a plugin that fails). The model, runner, scheduler and attention backend are
registered here as they land (issue: vLLM plugin core).
"""

from __future__ import annotations

import os

_REGISTERED_PID: int | None = None


def register() -> None:
    global _REGISTERED_PID
    if _REGISTERED_PID == os.getpid():
        return
    _REGISTERED_PID = os.getpid()


def is_registered() -> bool:
    """True once ``register`` has run in this process."""
    return _REGISTERED_PID == os.getpid()
