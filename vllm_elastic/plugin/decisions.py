"""A running digest of every decision a worker took, so that tests can check that TP ranks agree.

Under tensor parallel every rank runs the same decoder states on its shard of the heads; the
decisions (commits, most-attended keys, refresh layers) must be the same on every rank, or the
ranks' caches drift apart silently while rank 0's tokens still look plausible. After each step the
runner folds each decoded state's canvas (the commits), its tracked keys (Elastic) and its compute
counters (refresh layers and rows) into a SHA-256; ``ElasticCPUWorker.elastic_info`` returns it. It costs a pass over every canvas per
step, so it runs only when ``VLLM_ELASTIC_DECISION_DIGEST=1`` asks for it (the TP tests do).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import numpy as np

from ..core.decoders.base import DecodeState
from ..core.decoders.elastic import ElasticState

DIGEST_ENV = "VLLM_ELASTIC_DECISION_DIGEST"


class DecisionDigest:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.steps = 0
        self.enabled = os.environ.get(DIGEST_ENV, "0") == "1"

    def update(self, states: Iterable[DecodeState]) -> None:
        for state in states:
            self._hash.update(np.asarray(state.canvas.x).tobytes())
            if isinstance(state, ElasticState):
                self._hash.update(np.asarray(state.tracked).tobytes())
            self._hash.update(repr(sorted(state.stats.to_dict().items())).encode())
        self.steps += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
