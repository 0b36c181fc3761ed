"""The diffusion model runner: one denoising step of every scheduled request per engine step.

A narrow subclass of vLLM's V1 runner (``CPUModelRunner``, ``vllm/v1/worker/cpu_model_runner.py``).
vLLM still does its bookkeeping (persistent batch, block tables, output assembly); five methods
change:

- ``initialize_kv_cache_tensors`` keeps vLLM's per-layer KV tensors: every request's decoder caches
  (K/V, and q / layer inputs for a refresh) live in that request's blocks (``paged_cache.py``);

- ``execute_model`` frees the decode state of finished or aborted requests, marks the step and
  takes the scheduler's deferred-refresh grants (``plugin/refresh.py``);
- ``_model_forward`` runs the diffusion step in place of vLLM's forward: ``core.generate.step`` on
  the vLLM model for all scheduled requests (one packed forward for the whole batch, the commit,
  one copy of the results to the host), and up to the scheduler's ``denoise_steps`` of them while
  nothing happens that the scheduler must see (``_diffusion_step``). It returns zero-width hidden
  states: the model's ``compute_logits`` skips the LM head on them, so vLLM never computes logits
  of canvas rows;
- ``_sample`` returns, per request, the tokens that newly extend its contiguous committed prefix,
  padded with -1 (vLLM drops those). The scheduler appends them and rolls the rest of the canvas
  back (``scheduler.py``). A request decodes only once its blocks cover its whole canvas (the
  scheduler reserves them when it admits the request).
- ``sample_tokens`` adds to vLLM's output (``ElasticRunnerOutput``) the rows each request's next
  step computes (the scheduler books that many tokens for it), each request's pending deferred
  refresh, for the scheduler to grant in a later step, and the requests whose
  decode reached its step bound (``core/decoders/base.py``) with positions still masked: the
  scheduler ends those with finish_reason "length" and stop_reason ``STEP_LIMIT_REASON``.

Per-request state is a ``RequestDecode`` (``request_decode.py``) kept here by request id:
never on an ``nn.Module``.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.distributed import (
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_reduce,
)
from vllm.logger import init_logger
from vllm.v1.outputs import ModelRunnerOutput, SamplerOutput
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

from ..core.decoders.base import DecodeState, RefreshCost
from ..core.forward import no_reduce
from ..core.generate import new_state, step
from ..core.kv_pool import BlockTable, KVPool
from ..core.logprobs import TokenLogprobs
from ..core.op_count import OpCounts
from . import settings, trace
from .decisions import DecisionDigest
from .logprobs import step_logprobs
from .metrics import PendingMetrics
from .paged_cache import BlocksMoved, PagedStore, bind, paged_group
from .refresh import (
    STEP_LIMIT_REASON,
    ElasticRunnerOutput,
    ElasticSchedulerOutput,
    booked_tokens,
    extend,
)
from .request_decode import RequestDecode
from .stats import RecentStats

if TYPE_CHECKING:
    from vllm.v1.core.sched.output import SchedulerOutput

logger = init_logger("vllm.plugins.elastic")

PLACEHOLDER = -1  # vLLM's PLACEHOLDER_TOKEN_ID: "no token in this slot"
MIN_WIDTH = 2  # vLLM keeps the -1 entries of a width-1 output (its no-spec-decode path)


class ElasticRunnerMixin:
    """The diffusion step on top of a vLLM V1 runner (mixed into ``CPUModelRunner`` below)."""

    def __init__(self, vllm_config, device: torch.device) -> None:
        super().__init__(vllm_config, device)  # vLLM's runner
        self._init_elastic()
        trace("runner")

    def _init_elastic(self) -> None:
        self.decodes: dict[str, RequestDecode] = {}
        self.recent_stats = RecentStats()  # of finished requests, for plugin.stats.request_stats
        self.pending_metrics = PendingMetrics()  # drained by the server's /metrics (metrics.py)
        self.engine_defaults = settings.engine_settings(
            self.vllm_config.additional_config, self.vllm_config.model_config
        )
        self.step_pending = False  # execute_model saw scheduled tokens; _sample has not run yet
        self.step_tokens: list[list[int]] = []  # the step's new tokens per request (batch order)
        self.step_logprobs: list[list[TokenLogprobs] | None] = []  # their records, if asked
        self.paged_store: PagedStore | None = None  # set once vLLM has allocated the KV tensors
        self.paged_group = 0  # the KV cache group (block table) of the paged layers
        # Tensor parallel: the Elastic statistics are sums over heads, so forward_step reduces each
        # layer's per-shard sums over the TP group (one all-reduce per layer for all requests,
        # core/forward.py) before it decides; the identity on one rank.
        self.stats_reduce = no_reduce
        if get_tensor_model_parallel_world_size() > 1:
            self.stats_reduce = tensor_model_parallel_all_reduce
        self.decisions = DecisionDigest()  # what tests compare across ranks
        # deferred refresh (plugin/refresh.py): this step's grants from the scheduler (None: not
        # our scheduler's output, grant every pending one) and the pending refreshes after it
        self.refresh_grants: set[str] | None = None
        self.refresh_requests: dict[str, RefreshCost] = {}
        self.denoise_steps = 1  # denoising steps this engine step may run (the scheduler's)
        # op counting of whole engine steps (worker RPC ``elastic_count_steps``; bench/count_ops.py)
        self.steps_to_count = 0
        self.step_counts: list[dict] = []
        self._counting: OpCounts | None = None
        self.step_limited: set[str] = set()  # requests this step ended at their step bound
        self.next_rows: dict[str, int] = {}  # rows of each request's next step, for the scheduler
        self.booking: list[dict] | None = None  # per step, booked tokens against rows (tests)
        self._booked: dict[str, int] = {}  # the scheduler's tokens per request in this step
        self._host_dirty = False  # decoded since the worker last went idle

    def initialize_kv_cache_tensors(self, kv_cache_config, kernel_block_sizes, **kwargs):
        """Keep every layer's KV tensor, addressed by the scheduler's block ids (paged_cache.py)."""
        kv_caches = super().initialize_kv_cache_tensors(
            kv_cache_config, kernel_block_sizes, **kwargs
        )
        self.paged_store = PagedStore.from_kv_caches(kv_caches, self.get_model())
        self.paged_group = paged_group(kv_cache_config, self.get_model())
        return kv_caches

    def execute_model(self, scheduler_output: SchedulerOutput, intermediate_tensors=None):
        for req_id in scheduler_output.finished_req_ids:  # finished, stopped or aborted
            self.decodes.pop(req_id, None)
        self.step_pending = scheduler_output.total_num_scheduled_tokens > 0
        # idle again (no request left, none scheduled: not the step that starts the next one):
        # hand back what the steps freed
        if not self.decodes and not self.step_pending and self._host_dirty:
            release_host_memory()
            self._host_dirty = False
        self._host_dirty = self._host_dirty or self.step_pending
        self.refresh_grants, self.denoise_steps = None, 1
        if isinstance(scheduler_output, ElasticSchedulerOutput):
            self.refresh_grants = scheduler_output.refresh_grants
            self.denoise_steps = scheduler_output.denoise_steps
        self.refresh_requests, self.step_limited, self.next_rows = {}, set(), {}
        self._booked = scheduler_output.num_scheduled_tokens
        if self.steps_to_count and self.step_pending:
            self._counting = OpCounts()
            self._counting.start()
        return super().execute_model(scheduler_output, intermediate_tensors)

    def sample_tokens(self, grammar_output):
        output = super().sample_tokens(grammar_output)
        if self._counting is not None:
            self._counting.stop()
            self.step_counts.append(
                {"requests": self.input_batch.num_reqs, **self._counting.to_dict()}
            )
            self._counting, self.steps_to_count = None, self.steps_to_count - 1
        reports = self.refresh_requests or self.step_limited or self.next_rows
        if type(output) is ModelRunnerOutput and reports:  # extend copies: never mutates vLLM's
            # shared EMPTY_MODEL_RUNNER_OUTPUT
            output = extend(
                output,
                ElasticRunnerOutput,
                refresh_requests=self.refresh_requests,
                step_limited=self.step_limited,
                next_rows=self.next_rows,
            )
        return output

    def _model_forward(
        self,
        input_ids=None,
        positions=None,
        intermediate_tensors=None,
        inputs_embeds=None,
        **model_kwargs: Any,
    ):
        if not self.step_pending:  # dummy and profiling runs: vLLM's own forward
            return super()._model_forward(
                input_ids, positions, intermediate_tensors, inputs_embeds, **model_kwargs
            )
        self.step_tokens, self.step_logprobs = self._diffusion_step()
        # zero-width: vLLM indexes these rows for its sampler, and the model's compute_logits
        # returns zero-width logits for them without running the LM head
        return torch.empty(positions.shape[-1], 0, dtype=self.dtype, device=self.device)

    def _diffusion_step(self):
        """Up to ``denoise_steps`` denoising steps of every scheduled request, the first as
        scheduled; its new tokens and their logprob records (None where not asked), in batch
        order.

        A denoising step after the first runs only while nothing has happened that the scheduler
        must see first: every scheduled request stepped in the last one, and none finished,
        reached its step bound or asked for a deferred refresh. So an engine step ends where a
        one-step engine step would hand the scheduler news, and the requests decode the same
        steps with the same grants; what the extra steps save is the engine's round trip per
        step. Each denoising step's rows stay within ``max_num_batched_tokens``."""
        batch = self.input_batch
        req_ids = batch.req_ids[: batch.num_reqs]
        decodes = [self._decode_of(req_id) for req_id in req_ids]
        ready_ids = self._within_budget([r for r, d in zip(req_ids, decodes) if self._ready(r, d)])
        new_tokens: dict[str, list[int]] = {r: [] for r in req_ids}
        new_logprobs: dict[str, list[TokenLogprobs] | None] = {r: None for r in req_ids}
        stepped = ready_ids
        for n in range(self.denoise_steps):
            if not stepped:
                break
            if self.booking is not None:
                self.booking.append(self._booking_entry(stepped, continued=n > 0))
            self._step(self.get_model(), stepped, [self.decodes[r].state for r in stepped])
            if self.decisions.enabled:
                self.decisions.update(self.decodes[r].state for r in stepped)
            for req_id in stepped:
                self.pending_metrics.observe_step(self._take(req_id, new_tokens, new_logprobs))
            if len(stepped) < len(req_ids) or not self._uneventful(stepped):
                break
            stepped = self._within_budget(stepped)
        ready = set(ready_ids)
        for req_id in req_ids:
            if req_id not in ready:  # a rejected request hands out its EOS here
                self._take(req_id, new_tokens, new_logprobs)
        for req_id, d in zip(req_ids, decodes):
            if d.finished and d.state is not None:  # its last token goes out in this step
                self.recent_stats.record(req_id, d.state.stats.to_dict())
                self.pending_metrics.observe_request(d.state.stats.to_dict())
                if d.step_limited:
                    self._end_step_limited(req_id, d)
            elif d.state is not None:
                self.next_rows[req_id] = d.state.next_rows()
        return [new_tokens[r] for r in req_ids], [new_logprobs[r] for r in req_ids]

    def _take(self, req_id: str, tokens: dict[str, list[int]], logprobs: dict) -> int:
        """Add what the request's last denoising step handed out to its engine step's tokens and
        their records; returns how many it handed out."""
        d = self.decodes[req_id]
        taken = d.take_committed()
        tokens[req_id] += taken
        records = d.logprobs_of(taken)
        if records is not None:
            logprobs[req_id] = (logprobs[req_id] or []) + records
        return len(taken)

    def _uneventful(self, stepped: list[str]) -> bool:
        """No stepped request finished, reached its step bound or asked for a refresh."""
        return not self.refresh_requests and not any(self.decodes[r].finished for r in stepped)

    def _within_budget(self, ready_ids: list[str]) -> list[str]:
        """The ready requests whose rows fit in ``max_num_batched_tokens``: those that waited
        longest first, then in batch order, up to the first that does not fit (always one).

        vLLM's token budget counts the scheduler's drafts, and a step can compute more rows than
        the canvas a request has left (a block's full refresh near the end of the canvas), so
        the runner holds the bound: a request left out waits a step, handing out nothing, and
        goes first next time."""
        order = sorted(ready_ids, key=lambda r: -self.decodes[r].waited)  # stable: batch order
        budget, used, chosen = self.scheduler_config.max_num_batched_tokens, 0, []
        for req_id in order:
            rows = self.decodes[req_id].state.next_rows()
            if chosen and used + rows > budget:
                break
            chosen.append(req_id)
            used += rows
        stepped = set(chosen)
        for req_id in ready_ids:
            d = self.decodes[req_id]
            d.waited = 0 if req_id in stepped else d.waited + 1
        return [r for r in ready_ids if r in stepped]  # batch order

    def _booking_entry(self, ready_ids: list[str], continued: bool) -> dict:
        """What the scheduler booked for each request stepped now, beside the rows its step
        computes (before any refresh), the canvas it had not handed out, and whether the step
        continues the engine step (the booking covers the engine step's first)."""
        entry = {}
        for req_id in ready_ids:
            d = self.decodes[req_id]
            entry[req_id] = {"booked": self._booked[req_id], "rows": d.state.next_rows(),
                             "left": d.left, "first": d.state.steps_taken == 0,
                             "continued": continued}  # fmt: skip
        return entry

    def _end_step_limited(self, req_id: str, decode: RequestDecode) -> None:
        """Report a request whose decode reached its step bound; the scheduler ends it."""
        state = decode.state
        self.step_limited.add(req_id)
        self.pending_metrics.step_limited += 1
        logger.warning(
            "vllm-elastic: request %s reached its step bound (%d steps, method %s) with %d of %d "
            "positions handed out; ending it (finish_reason=length, stop_reason=%s)",
            req_id, state.steps_taken, state.settings.method, decode.emitted,
            state.settings.gen_length, STEP_LIMIT_REASON,
        )  # fmt: skip

    def _sample(self, logits, spec_decode_metadata) -> SamplerOutput:
        if not self.step_pending:
            return super()._sample(logits, spec_decode_metadata)
        self.step_pending = False
        new_tokens, self.step_tokens = self.step_tokens, []
        new_logprobs, self.step_logprobs = self.step_logprobs, []
        width = max([MIN_WIDTH, *map(len, new_tokens)])
        out = np.full((len(new_tokens), width), PLACEHOLDER, dtype=np.int32)  # [R, width]
        for row, tokens in enumerate(new_tokens):
            out[row, : len(tokens)] = tokens
        sampled = torch.from_numpy(out).to(self.device)
        return SamplerOutput(
            sampled_token_ids=sampled, logprobs_tensors=step_logprobs(new_logprobs, width)
        )

    def _step(self, model, req_ids: list[str], states: list[DecodeState]) -> None:
        """One core step of the ready states, their granted refreshes in it; then collect the
        refreshes still pending for the scheduler."""
        grants = self.refresh_grants
        for req_id, state in zip(req_ids, states):
            if grants is not None and req_id in grants:
                state.grant_refresh()
        step(model, states, self.stats_reduce, grant_all=grants is None)
        for req_id, state in zip(req_ids, states):
            cost = state.pending_refresh()
            if cost is not None and not state.done:
                self.refresh_requests[req_id] = cost

    def _decode_of(self, req_id: str) -> RequestDecode:
        decode = self.decodes.get(req_id)
        if decode is not None:
            return decode
        request = self.requests[req_id]
        model = self.get_model()
        cfg = model.config
        prompt = list(request.prompt_token_ids or [])
        decode = RequestDecode(None, len(prompt), cfg.eos_token_id, cfg.mask_token_id)
        decode.wants_logprobs = request.sampling_params.logprobs is not None
        try:
            s = settings.request_settings(request.sampling_params, self.engine_defaults)
            decode.state = new_state(model, prompt, s, self._cache_factory(decode))
        except ValueError as exc:  # checked at submission already; this is the last guard
            decode.error = str(exc)
            logger.error("vllm-elastic: request %s rejected on the worker: %s", req_id, exc)
        self.decodes[req_id] = decode
        return decode

    def _cache_factory(self, decode: RequestDecode):
        """The decoder's cache allocator: a block table in vLLM's pages, bound to the request's
        blocks before every step (``_ready``); before vLLM has allocated them (profiling), a
        pool of the decoder's own."""
        store = self.paged_store
        if store is None:
            pool = KVPool.for_model(self.get_model())
            return lambda model, n, keep_inputs: pool.reserve(n, keep_inputs)

        def paged(model, n: int, keep_inputs: bool) -> BlockTable:
            decode.cache = store.table(keep_inputs)
            return decode.cache

        return paged

    def _ready(self, req_id: str, decode: RequestDecode) -> bool:
        """Decodes this step: the scheduler booked the rows its step computes (vLLM cuts the
        drafts of the last requests when the token budget runs out: those wait a step, so that
        ``max_num_batched_tokens`` bounds the rows a step runs), and blocks for its whole canvas
        are allocated (the scheduler reserves them at admission; until then it waits a step,
        emitting nothing)."""
        if decode.state is None or decode.finished:
            return False
        booked = booked_tokens(decode.state.next_rows(), decode.left)
        if decode.state.steps_taken and self._booked[req_id] < booked:
            return False
        if decode.cache is None:
            return True
        block_ids = self.requests[req_id].block_ids[self.paged_group]
        n = decode.state.canvas.length
        try:
            return bind(decode.cache, block_ids, self.paged_store.block_size, n)
        except BlocksMoved as exc:  # its caches are lost: end it (with EOS) rather than decode junk
            logger.error("vllm-elastic: request %s ended: %s", req_id, exc)
            decode.state, decode.error = None, str(exc)
            return False


def release_host_memory() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``), once the worker has no
    request left. A step allocates host arrays whose sizes follow the batch; glibc keeps what they
    freed in its arenas, so a server's resident memory would ratchet up with the largest batches
    it has seen. Nothing to do where the C library is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ElasticCPUModelRunner(ElasticRunnerMixin, CPUModelRunner):
    """The diffusion step on vLLM's CPU runner (``worker.py``)."""


class ElasticGPUModelRunner(ElasticRunnerMixin, GPUModelRunner):
    """The same diffusion step on vLLM's CUDA runner (``gpu_worker.py``; not run here)."""
