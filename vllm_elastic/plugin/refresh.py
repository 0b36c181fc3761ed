"""Deferred refresh across the batch: the runner reports, the scheduler grants within a budget.

With ``refresh_mode="deferred"`` a drift trigger does not refresh inside that forward; the
decoder state keeps the refresh pending (``core/decoders/elastic.py``). Each step:

1. the runner (worker process) reports every request's pending refresh, its cost and how long
   it has waited (``core.decoders.base.RefreshCost``), in ``ElasticRunnerOutput.refresh_requests``;
2. the scheduler (engine-core process) keeps the latest report per request
   (``ElasticScheduler.update_from_output``) and, right after it has scheduled the next step,
   grants refreshes with ``choose_grants``: the longest-waiting first, while their cost fits the
   step's refresh budget, and always at least one so that nothing starves;
3. the grants reach the runner in ``ElasticSchedulerOutput.refresh_grants``; the runner calls
   ``grant_refresh`` on those states before the step's forward. Ungranted requests keep decoding
   on their stale cache and ask again next step.

Both messages are subclasses of vLLM's output dataclasses with one extra field: under the ``mp``
executor (always on the CPU; TP ranks are separate processes) they are pickled between the
engine core and the workers, so nothing is shared through Python objects. Every TP rank gets the
same grants; the scheduler reads rank 0's reports (all ranks decide the same).

Budget, in token rows (one row through all L layers; a refresh from layer l of an N-row canvas
costs ceil(N (L - l) / L)): ``additional_config={"elastic": {"refresh_budget": B}}``, or by
default what the step leaves of vLLM's token budget, ``max_num_batched_tokens`` minus the rows the
step computes without refreshes (``ElasticScheduler._step_rows``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.outputs import ModelRunnerOutput

from ..core.decoders.base import RefreshCost

T = TypeVar("T")

# stop_reason of a request the step bound ended (finish_reason "length": its answer is cut short)
STEP_LIMIT_REASON = "step_limit"


@dataclass
class ElasticRunnerOutput(ModelRunnerOutput):
    """vLLM's runner output, each request's pending deferred refresh (request id -> cost), the
    requests whose decode ended at its step bound in this step (the scheduler ends them), and the
    rows each request's next step computes (request id -> token rows; the scheduler books them)."""

    refresh_requests: dict[str, RefreshCost] = field(default_factory=dict)
    step_limited: set[str] = field(default_factory=set)
    next_rows: dict[str, int] = field(default_factory=dict)


@dataclass
class ElasticSchedulerOutput(SchedulerOutput):
    """vLLM's scheduler output, the request ids whose pending refresh runs in this step, and how
    many denoising steps the step may run (``ElasticScheduler``'s ``steps_per_schedule``)."""

    refresh_grants: set[str] = field(default_factory=set)
    denoise_steps: int = 1


def booked_tokens(rows: int, remaining: int) -> int:
    """The tokens the scheduler books for a running request's step: the rows it computes, within
    the ``remaining`` canvas it has not handed out (vLLM's drafts cannot pass the canvas end), and
    at least one (vLLM skips a request with nothing scheduled)."""
    return max(1, min(rows, remaining))


def extend(base: object, cls: type[T], **extra) -> T:
    """``cls`` (a dataclass subclass of ``type(base)``) with base's fields and ``extra``."""
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    return cls(**values, **extra)


def choose_grants(
    pending: dict[str, RefreshCost], arrival: dict[str, float], budget: int
) -> set[str]:
    """The pending refreshes that run next step: longest-waiting first (then earliest arrival),
    while their token rows fit ``budget``; the first one always (no starvation). Stops at the
    first that does not fit, so a large refresh is not overtaken forever by small ones."""
    order = sorted(pending, key=lambda r: (-pending[r].waited, arrival.get(r, 0.0), r))
    granted: set[str] = set()
    left = budget
    for req_id in order:
        cost = pending[req_id].token_rows
        if granted and cost > left:
            break
        granted.add(req_id)
        left -= cost
    return granted
