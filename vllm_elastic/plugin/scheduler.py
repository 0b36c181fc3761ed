"""The scheduler hook: a request's canvas is re-run every step until the runner commits tokens.

A subclass of vLLM's V1 ``Scheduler``. A step books what it computes: each running request is
scheduled as many draft tokens as its next step computes rows (``DecodeState.next_rows``, which
the runner reports in ``ElasticRunnerOutput.next_rows``), at most the canvas it has not handed out
yet, so that ``max_num_batched_tokens`` bounds the rows a step runs. With
``num_sampled_tokens_per_step = 0`` vLLM counts the tokens the runner hands out as accepted and
rolls the other drafts back, so ``num_computed_tokens`` stays at the handed-out length (their KV
blocks stay allocated; nothing is re-allocated). A request may hand out more tokens than it was
scheduled drafts (a step that closes a gap in the committed prefix); vLLM's rollback then counts
the extra as computed, which they are.

Admission: a waiting request is admitted only when KV blocks for its whole canvas (prompt +
max_tokens) fit next to what the running requests still need, so a running canvas never has to be
preempted to grow, and only when its first step, a forward over its whole canvas, fits in the
token budget that the running requests' drafts leave (vLLM books only the prompt for it). The
blocks of a new request's whole canvas are reserved in its first step
(``_reserve_canvases``): the runner keeps every position's per-layer caches in them
(``paged_cache.py``). Requests finish on the model's EOS (as handed out by the runner) or at the
end of the canvas (vLLM's max_tokens stop).

Step bound: a request whose decode reached its step bound with positions still masked (the
runner reports it in ``ElasticRunnerOutput.step_limited``) is finished here with vLLM's
``FINISHED_LENGTH_CAPPED`` (finish_reason "length": the answer is cut short) and stop_reason
``"step_limit"``; its blocks are freed like any finished request's.

Deferred refresh (``plugin/refresh.py``): ``update_from_output`` keeps each request's pending
refresh as the runner reports it; ``schedule`` grants some of them within the step's refresh
budget and sends the grants to the runner in an ``ElasticSchedulerOutput``.

Several denoising steps per engine step: the same output allows the runner ``steps_per_schedule``
of them (``additional_config``; the runner stops at the first that has news for the scheduler),
and one while a request waits for admission, so that it is admitted after one step, or while a
running request streams its output, so that its client gets every step's tokens.
"""

from __future__ import annotations

from vllm.sampling_params import RequestOutputKind
from vllm.utils.math_utils import cdiv
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

from ..core.decoders.base import RefreshCost
from . import settings, trace
from .refresh import (
    STEP_LIMIT_REASON,
    ElasticRunnerOutput,
    ElasticSchedulerOutput,
    booked_tokens,
    choose_grants,
    extend,
)


class ElasticScheduler(Scheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # NOTE: an instance attribute of the stock scheduler (1 for autoregressive models). 0 makes
        # an empty output reject all drafts instead of hanging the request.
        self.num_sampled_tokens_per_step = 0
        hf_config = self.vllm_config.model_config.hf_config
        self.model_eos_id: int = hf_config.eos_token_id
        self.canvas_token_id: int = (
            hf_config.mask_token_id
        )  # placeholder ids; the runner has the canvas
        # deferred refresh: the latest pending refresh per request (runner reports), the budget
        # in token rows per step (None: what the step leaves of max_num_scheduled_tokens)
        self.refresh_pending: dict[str, RefreshCost] = {}
        self.refresh_budget = settings.engine_refresh_budget(self.vllm_config.additional_config)
        self.steps_per_schedule = settings.engine_steps_per_schedule(
            self.vllm_config.additional_config
        )
        self.step_limited: set[str] = set()  # the runner's report of the step being processed
        self.next_rows: dict[str, int] = {}  # rows of each request's next step (runner reports)
        trace("scheduler")

    def schedule(self, *args, **kwargs):
        for request in self.running:
            # drafts are consumed by every schedule(): set them again each step
            request.spec_token_ids = [self.canvas_token_id] * self._drafts(request)
        rows = sum(self._rows(request) for request in self.running)
        limit = self.max_num_active_reqs
        admissible = (
            len(self.running)
            + self.num_waiting_for_streaming_input
            + self._num_admissible(self.max_num_scheduled_tokens - rows)
        )
        self.max_num_active_reqs = min(limit, admissible)  # caps admission in this schedule() only
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            self.max_num_active_reqs = limit
        self._reserve_canvases(output)
        return self._grant_refreshes(output)

    def _drafts(self, request: Request) -> int:
        """Draft tokens for a running request, so that vLLM schedules it ``booked_tokens`` of the
        rows its next step computes (before the runner's first report: the whole canvas it has
        not handed out)."""
        remaining = request.max_tokens - request.num_output_tokens
        booked = booked_tokens(self._rows(request), remaining)
        # tokens vLLM still counts as uncomputed (those handed out by a step without drafts, a
        # request's first) are scheduled anyway: they are part of the booking
        return max(0, booked - (request.num_tokens - request.num_computed_tokens))

    def _rows(self, request: Request) -> int:
        """The token rows a request's next step computes: the runner's report, else (before its
        first step) its whole canvas."""
        rows = self.next_rows.get(request.request_id)
        return self._canvas_tokens(request) if rows is None else rows

    def _step_rows(self, output: SchedulerOutput) -> int:
        """The token rows the step computes, before refreshes: each scheduled request's."""
        return sum(self._rows(self.requests[r]) for r in output.num_scheduled_tokens)

    def _grant_refreshes(self, output: SchedulerOutput) -> ElasticSchedulerOutput:
        """The step's output with the deferred refreshes granted in it (``refresh.choose_grants``)."""
        scheduled = output.num_scheduled_tokens
        pending = {r: c for r, c in self.refresh_pending.items() if r in scheduled}
        budget = self.refresh_budget
        if budget is None:
            budget = self.max_num_scheduled_tokens - self._step_rows(output)
        arrival = {r: self.requests[r].arrival_time for r in pending}
        grants = choose_grants(pending, arrival, budget) if pending else set()
        return extend(
            output, ElasticSchedulerOutput, refresh_grants=grants, denoise_steps=self._steps()
        )

    def _steps(self) -> int:
        """Denoising steps the next engine step may run: ``steps_per_schedule``, but one while a
        request waits for admission (it gets its chance after one step) or a running request
        streams (its client gets the tokens of every step)."""
        if len(self.waiting) or any(
            r.sampling_params is not None
            and r.sampling_params.output_kind != RequestOutputKind.FINAL_ONLY
            for r in self.running
        ):
            return 1
        return self.steps_per_schedule

    def update_from_output(self, scheduler_output, model_runner_output):
        """Keep the runner's latest pending-refresh report of every request it stepped, and end
        the requests it reports at their step bound."""
        for req_id in model_runner_output.req_ids:
            self.refresh_pending.pop(req_id, None)
        self.step_limited = set()
        if isinstance(model_runner_output, ElasticRunnerOutput):
            self.refresh_pending.update(model_runner_output.refresh_requests)
            self.step_limited = model_runner_output.step_limited
            self.next_rows.update(model_runner_output.next_rows)
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self._end_step_limited(outputs)
        for reports in (self.refresh_pending, self.next_rows):
            for req_id in [r for r in reports if r not in self.requests]:
                del reports[req_id]  # finished or aborted
        return outputs

    def _end_step_limited(self, outputs: dict[int, EngineCoreOutputs]) -> None:
        """Finish the step-limited requests that handed out no token in their last step (those
        that did were finished in ``_update_request_with_output``), as vLLM's scheduler finishes
        a request on an error: ``finish_requests`` frees it, an empty output tells the client."""
        ended = self.finish_requests(self.step_limited, RequestStatus.FINISHED_LENGTH_CAPPED)
        for request in ended:
            request.stop_reason = STEP_LIMIT_REASON
            output = EngineCoreOutput(
                request_id=request.request_id,
                new_token_ids=[],
                finish_reason=request.get_finished_reason(),
                stop_reason=STEP_LIMIT_REASON,
                events=request.take_events(),
                trace_headers=request.trace_headers,
            )
            client = outputs.setdefault(request.client_index, EngineCoreOutputs(outputs=[]))
            client.outputs.append(output)
        self.step_limited = set()

    def _reserve_canvases(self, output: SchedulerOutput) -> None:
        """Give each newly admitted request the blocks of its whole canvas in this very step.

        vLLM allocates a new request's blocks for its prompt only (the canvas drafts are scheduled
        from its second step on), but the runner's first forward writes K/V of every canvas
        position into the request's blocks. Admission already counted these blocks as free.
        """
        for new in output.scheduled_new_reqs:
            request = self.requests[new.req_id]
            missing = self._canvas_tokens(request) - request.num_computed_tokens
            if missing <= 0:
                continue
            blocks = self.kv_cache_manager.allocate_slots(request, missing)
            if blocks is None:  # the runner waits until the drafts bring the blocks
                continue
            for ids, extra in zip(new.block_ids, blocks.get_block_ids()):
                ids.extend(extra)
        fresh = self.kv_cache_manager.take_new_block_ids()  # else zeroed next step, after use
        if fresh and self.needs_kv_cache_zeroing:
            output.new_block_ids_to_zero = [*(output.new_block_ids_to_zero or []), *fresh]

    def _canvas_tokens(self, request: Request) -> int:
        return min(request.num_prompt_tokens + request.max_tokens, self.max_model_len)

    def _num_admissible(self, token_budget: int) -> int:
        """How many waiting requests, in queue order, fit with their whole canvas: its KV blocks,
        and its first step's rows in ``token_budget`` (what the running requests' drafts leave).
        A canvas never exceeds the whole budget (``max_num_batched_tokens >= max_model_len``), so
        a request waits at most until enough running requests finish."""
        free = self.kv_cache_manager.block_pool.get_num_free_blocks()
        free -= sum(self._blocks_still_needed(r) for r in self.running)
        admitted = 0
        for request in self.waiting:
            need, rows = self._blocks_still_needed(request), self._canvas_tokens(request)
            if need > free or rows > token_budget:
                break
            free, token_budget, admitted = free - need, token_budget - rows, admitted + 1
        return admitted

    def _blocks_still_needed(self, request: Request) -> int:
        """Blocks the request's canvas (prompt + max_tokens) needs beyond those it holds."""
        tokens = self._canvas_tokens(request)
        held = self.kv_cache_manager.coordinator.get_blocks(request.request_id)
        groups = len(self.kv_cache_config.kv_cache_groups)
        return max(0, groups * cdiv(tokens, self.block_size) - sum(map(len, held)))

    def _update_request_with_output(
        self, request: Request, new_token_ids: list[int], is_stale: bool = False
    ) -> tuple[list[int], bool]:
        """Also stop on the model's EOS (vLLM's check uses the tokenizer's, if any), and at the
        step bound when the runner reports it (finish_reason "length", stop_reason
        ``STEP_LIMIT_REASON``)."""
        new_token_ids, stopped = super()._update_request_with_output(
            request, new_token_ids, is_stale
        )
        if not stopped and new_token_ids and new_token_ids[-1] == self.model_eos_id:
            request.status = RequestStatus.FINISHED_STOPPED
            stopped = True
        if not stopped and request.request_id in self.step_limited:
            request.status = RequestStatus.FINISHED_LENGTH_CAPPED
            request.stop_reason = STEP_LIMIT_REASON
            stopped = True
        return new_token_ids, stopped

    def make_spec_decoding_stats(
        self,
        spec_decoding_stats,
        num_draft_tokens,
        num_accepted_tokens,
        num_invalid_spec_tokens,
        request_id,
    ):
        """No speculative-decoding metrics: the drafts are a canvas, not guesses to accept.

        (The stock method sizes its stats by ``num_spec_tokens`` = 0 and raises IndexError.)
        """
        return None
