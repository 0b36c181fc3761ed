"""Elastic-Cache counters on the server's ``/metrics`` (Prometheus), worker to front end.

The numbers are made on the worker (the runner sees each step's commits and each request's
``ComputeStats``) but vLLM's ``/metrics`` is served by the API-server process. The path is the one
vLLM documents for plugins (``vllm/plugins/endpoint_plugins/interface.py``): a general plugin adds
the worker-side RPC method (``ElasticCPUWorker.elastic_metrics_drain``), and an endpoint plugin
(entry point ``vllm.endpoint_plugins: elastic``) reaches it with ``engine_client.collective_rpc``.
Here the endpoint plugin adds no route: an ASGI middleware drains the worker's buffered
observations into ``prometheus_client`` metrics of the API-server process just before vLLM's own
``/metrics`` handler renders the registry, so each scrape is current and an idle server pays nothing.

NOTE: vLLM loads an endpoint plugin only when it is named in ``VLLM_PLUGINS``
(``VLLM_PLUGINS=elastic``); without it the other metrics are served and these are absent.

Exported (``model_name`` label as vLLM's own):
- ``vllm_elastic:request_nfe`` histogram: model forwards (denoising steps) per finished request;
- ``vllm_elastic:request_layer_row_fraction`` histogram: rows computed / rows without a cache;
- ``vllm_elastic:tokens_committed_per_step`` histogram: tokens one request committed in one step;
- ``vllm_elastic:layer_refreshes_total{layer}`` counter: per layer, the steps that recomputed it for
  every row (a refresh from layer l counts at every layer >= l);
- ``vllm_elastic:requests_total`` counter: finished requests these numbers cover;
- ``vllm_elastic:requests_step_limited_total`` counter: requests ended by their step bound with
  positions still masked (finish_reason "length", stop_reason "step_limit"; a log line each);
- ``vllm_elastic:live_decodes`` gauge: per-request decode states the worker holds (running
  requests, and finished ones until the next engine step frees them): 0 on an idle server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RPC_METHOD = "elastic_metrics_drain"
MAX_PENDING = 100_000  # observations the worker keeps between scrapes; the oldest are dropped
NFE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FRACTION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
TOKENS_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


@dataclass(slots=True)
class PendingMetrics:
    """Worker side: observations since the last drain (filled by the runner)."""

    tokens_per_step: list[int] = field(default_factory=list)  # one per (request, decoding step)
    requests: list[dict[str, Any]] = field(default_factory=list)  # ComputeStats.to_dict() each
    dropped: int = 0
    step_limited: int = 0  # requests ended by their step bound

    def observe_step(self, committed: int) -> None:
        self.tokens_per_step.append(committed)
        if len(self.tokens_per_step) > MAX_PENDING:
            del self.tokens_per_step[: len(self.tokens_per_step) - MAX_PENDING]
            self.dropped += 1

    def observe_request(self, stats: dict[str, Any]) -> None:
        self.requests.append(stats)
        if len(self.requests) > MAX_PENDING:
            del self.requests[0]
            self.dropped += 1

    def drain(self, live_decodes: int) -> dict[str, Any]:
        """The observations since the last drain, and the worker's live decode states now."""
        out = {"tokens_per_step": self.tokens_per_step, "requests": self.requests}
        out.update(dropped=self.dropped, step_limited=self.step_limited, live_decodes=live_decodes)
        self.tokens_per_step, self.requests, self.dropped, self.step_limited = [], [], 0, 0
        return out


class ElasticPrometheus:
    """Front-end side: the Prometheus metrics, fed with the worker's drained observations."""

    def __init__(self, model_name: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        reg, labels = get_prometheus_registry(), ["model_name"]

        def histogram(name: str, doc: str, buckets) -> Any:
            return Histogram(name, doc, labels, buckets=buckets, registry=reg).labels(model_name)

        self.nfe = histogram(
            "vllm_elastic:request_nfe",
            "Model forwards (denoising steps) per finished request.",
            NFE_BUCKETS,
        )
        self.fraction = histogram(
            "vllm_elastic:request_layer_row_fraction",
            "Layer rows computed per finished request, as a fraction of a cache-less decode.",
            FRACTION_BUCKETS,
        )
        self.tokens = histogram(
            "vllm_elastic:tokens_committed_per_step",
            "Tokens one request committed to its output in one denoising step.",
            TOKENS_BUCKETS,
        )
        self.refreshes = Counter(
            "vllm_elastic:layer_refreshes",
            "Steps that recomputed this layer for every row (a refresh from layer l counts at "
            "every layer >= l; Elastic-Cache's depth-aware refresh).",
            [*labels, "layer"],
            registry=reg,
        )
        self.requests = Counter(
            "vllm_elastic:requests", "Finished requests counted above.", labels, registry=reg
        ).labels(model_name)
        self.step_limited = Counter(
            "vllm_elastic:requests_step_limited",
            "Requests ended by their step bound with positions still masked.",
            labels,
            registry=reg,
        ).labels(model_name)
        self.live_decodes = Gauge(
            "vllm_elastic:live_decodes",
            "Per-request decode states held by the worker (0 when idle).",
            labels,
            registry=reg,
            multiprocess_mode="mostrecent",  # as vLLM's own gauges
        ).labels(model_name)
        self.model_name = model_name

    def add(self, drained: dict[str, Any]) -> None:
        for n in drained["tokens_per_step"]:
            self.tokens.observe(n)
        for stats in drained["requests"]:
            self.nfe.observe(stats["nfe"])
            self.fraction.observe(stats["layer_token_fraction"])
            for layer, count in enumerate(stats["refreshes_per_layer"]):
                if count:
                    self.refreshes.labels(self.model_name, str(layer)).inc(count)
            self.requests.inc()
        self.step_limited.inc(drained.get("step_limited", 0))
        if "live_decodes" in drained:
            self.live_decodes.set(drained["live_decodes"])


class ElasticEndpointPlugin:
    """The ``vllm.endpoint_plugins`` entry ``elastic`` (vLLM's ``EndpointPlugin`` protocol)."""

    name = "elastic"
    required_tasks = ("generate",)

    def __init__(self) -> None:
        self.engine_client = None
        self.prometheus: ElasticPrometheus | None = None

    def attach_router(self, app) -> None:
        app.add_middleware(_DrainBeforeMetrics, plugin=self)

    async def init_state(self, engine_client, state, args) -> None:
        self.engine_client = engine_client
        if engine_client is not None:
            names = getattr(args, "served_model_name", None) or [args.model]
            self.prometheus = ElasticPrometheus(names[0])

    async def drain(self) -> None:
        if self.engine_client is None or self.prometheus is None:
            return
        for drained in await self.engine_client.collective_rpc(RPC_METHOD):  # one per worker
            if drained is not None:  # only the rank-0 worker of a TP group reports
                self.prometheus.add(drained)


class _DrainBeforeMetrics:
    """ASGI middleware: on ``GET /metrics``, first move the worker's observations in."""

    def __init__(self, app, plugin: ElasticEndpointPlugin) -> None:
        self.app, self.plugin = app, plugin

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/metrics":
            await self.plugin.drain()
        await self.app(scope, receive, send)
