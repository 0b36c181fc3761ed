"""A running digest of every decision a worker took, so that tests can check that TP ranks agree.

Under tensor parallel every rank runs the same decoder states on its shard of the heads; the
decisions (commits, most-attended keys, refresh layers) must be the same on every rank, or the
ranks' caches drift apart silently while rank 0's tokens still look plausible. After each step the
runner folds each decoded state's canvas (the commits), its tracked keys (Elastic) and its compute
counters (refresh layers and rows) into a SHA-256; ``ElasticCPUWorker.elastic_info`` returns it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ..core.decoders.base import DecodeState
from ..core.decoders.elastic import ElasticState


class DecisionDigest:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.steps = 0

    def update(self, states: Iterable[DecodeState]) -> None:
        for state in states:
            self._hash.update(state.canvas.x.cpu().numpy().tobytes())
            if isinstance(state, ElasticState):
                self._hash.update(state.tracked.cpu().numpy().tobytes())
            self._hash.update(repr(sorted(state.stats.to_dict().items())).encode())
        self.steps += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
