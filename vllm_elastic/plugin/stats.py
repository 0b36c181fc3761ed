"""Per-request compute stats (NFE, refreshes per layer, layer-row fraction) for ``LLM`` users.

The runner (worker process) records ``ComputeStats.to_dict()`` of each request when it hands out
the request's last token, in a bounded ``RecentStats`` (the newest ``capacity`` requests; the
oldest are dropped). Users read them after ``generate`` returns::

    outputs = llm.generate(prompts, params)
    for out, stats in zip(outputs, request_stats(llm, outputs)):
        print(stats["nfe"], stats["layer_token_fraction"], stats["refreshes_per_layer"])

``request_stats`` is ``llm.collective_rpc("elastic_request_stats", args=(request_ids,))`` on the
worker method of ``plugin/worker.py``. Why not a field of ``RequestOutput``: vLLM 0.32 has no free
per-request field from the model runner to the output (``kv_transfer_params`` belongs to KV
connectors, ``metrics`` is filled in the front end), and adding one means patching the engine core's
output path. NOTE: vLLM appends 8 random characters to each request id it receives (``"7"`` becomes
``"7-1a2b3c4d"``); the runner only sees the internal id, so lookups accept either form.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

DEFAULT_CAPACITY = 10_000  # finished requests whose stats stay retrievable
RPC_METHOD = "elastic_request_stats"


class RecentStats:
    """Stats dicts of recently finished requests by internal request id, oldest dropped first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def record(self, req_id: str, stats: dict[str, Any]) -> None:
        self._by_id[req_id] = stats
        self._by_id.move_to_end(req_id)
        while len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)

    def lookup(self, request_ids: Iterable[str]) -> list[dict[str, Any] | None]:
        """Stats per id (internal or as given to vLLM; the newest if reused), None if unknown."""
        external: dict[str, str] = {}
        for internal in self._by_id:  # oldest first: the newest request of an external id wins
            external[internal.rsplit("-", 1)[0]] = internal
        found = []
        for rid in request_ids:
            key = rid if rid in self._by_id else external.get(rid)
            found.append(dict(self._by_id[key]) if key is not None else None)
        return found


def request_stats(llm: Any, outputs: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Compute stats of finished ``RequestOutput``s of ``llm`` (a ``vllm.LLM``), in their order.

    Each dict is ``ComputeStats.to_dict()``: ``nfe``, ``rows_computed``, ``rows_nocache``,
    ``layer_token_fraction`` and ``refreshes_per_layer``. None for a request the workers do not
    remember (unfinished, rejected, aborted, or older than the last ``DEFAULT_CAPACITY``).
    """
    ids = [out.request_id for out in outputs]
    (found, *_) = llm.collective_rpc(RPC_METHOD, args=(ids,))  # TP ranks agree: rank 0
    return found
