"""Soak a running server: a changing mix of work for a bounded time, then check that it gave back
everything it held.

  python -m vllm_elastic.bench.soak --url http://127.0.0.1:8000 --model llada-tiny \
      --server-pid PID --seconds 600 --json soak.json

Phases (``tests/server/test_soak.py`` runs them on the tiny model and asserts on the report):

1. warm-up: ``--warmup-seconds`` of the same mix at the top concurrency, so that the server's
   memory reaches its working size; then the baseline of the server's resident memory (psutil,
   the process tree, also per process);
2. load: async clients (``httpx``) whose number rises step by step to ``--max-concurrency``, each
   sending the next request of a seeded mix (``soak_workload.py``) as soon as its last one ended,
   until ``--seconds`` pass or ``--max-requests`` are sent. A sampler reads ``/metrics`` and the
   memory every ``SAMPLE_S``;
3. replay: every distinct good request once more, alone (one at a time), as the oracle its
   answers under load must equal;
4. idle: wait until the scheduler holds no request and no KV block and the worker no decode state,
   then read the memory again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .soak_workload import Send, Spec, draw_sends, spec_pool

SAMPLE_S = 2.0  # seconds between two samples of /metrics and memory
WINDOW_S = 10.0  # tokens/s are reported per window of this many seconds
IDLE_TIMEOUT_S = 60.0  # the server must be idle this long after the last request at the latest
REQUEST_TIMEOUT_S = 600.0
GAUGES = {
    "generation_tokens": "vllm:generation_tokens_total",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_usage": "vllm:kv_cache_usage_perc",
    "live_decodes": "vllm_elastic:live_decodes",
    "step_limited": "vllm_elastic:requests_step_limited_total",
}


@dataclass(slots=True)
class Outcome:
    """What one request got back."""

    index: int
    spec: Spec | None
    status: int  # HTTP status; 0: the connection failed
    dropped: bool = False  # the client closed its stream before the end
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: Any = None
    error: str | None = None
    latency_s: float = 0.0


@dataclass(slots=True)
class SoakConfig:
    url: str  # the server's root, e.g. http://127.0.0.1:8000
    model: str
    server_pid: int | None = None
    seconds: float = 100.0
    max_requests: int = 2000
    max_concurrency: int = 16
    concurrency_steps: int = 5
    warmup_seconds: float = 30.0
    pool_size: int = 18
    max_canvas: int = 448
    seed: int = 0


def _choice(event: dict) -> dict:
    choices = event.get("choices") or [{}]
    return choices[0]


async def send_one(client: httpx.AsyncClient, send: Send, model: str) -> Outcome:
    """Send one request and read its answer (closing a stream early when the send says so)."""
    out, start = Outcome(send.index, send.spec, 0), time.monotonic()
    try:
        if not send.stream:
            r = await client.post(send.path, json=send.body(model))
            out.status = r.status_code
            if r.status_code == 200:
                choice = _choice(r.json())
                out.tokens = list(choice.get("token_ids") or [])
                out.finish_reason, out.stop_reason = choice["finish_reason"], choice["stop_reason"]
            else:
                out.error = r.text[:300]
        else:
            await _stream(client, send, model, out)
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.latency_s = time.monotonic() - start
    return out


async def _stream(client: httpx.AsyncClient, send: Send, model: str, out: Outcome) -> None:
    async with client.stream("POST", send.path, json=send.body(model)) as r:
        out.status = r.status_code
        if r.status_code != 200:
            out.error = (await r.aread()).decode(errors="replace")[:300]
            return
        chunks = 0
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:  # vLLM reports a failure inside a 200 stream
                out.error = json.dumps(event["error"])[:300]
                return
            choice = _choice(event)
            out.tokens.extend(choice.get("token_ids") or [])
            if choice.get("finish_reason"):
                out.finish_reason, out.stop_reason = choice["finish_reason"], choice["stop_reason"]
            chunks += 1
            if send.drop_after_chunks is not None and chunks > send.drop_after_chunks:
                out.dropped = True  # leaving the block closes the connection: vLLM aborts it
                return


class Sampler:
    """Samples the server's gauges and memory every ``SAMPLE_S`` while the soak runs."""

    def __init__(self, client: httpx.AsyncClient, server_pid: int | None) -> None:
        self.client, self.server_pid, self.samples = client, server_pid, []
        self.t0 = time.monotonic()

    async def sample(self) -> dict[str, float]:
        text = (await self.client.get("/metrics")).text
        row = {"t": round(time.monotonic() - self.t0, 2)}
        for key, name in GAUGES.items():
            row[key] = metric(text, name)
        by_process = rss_by_process(self.server_pid)
        row["rss_mib"] = round(sum(by_process.values()), 1)
        row["rss_by_process"] = by_process
        self.samples.append(row)
        return row

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
            except asyncio.TimeoutError:
                pass


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples over its label sets (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def rss_by_process(pid: int | None) -> dict[str, float]:
    """Resident memory (MiB) of the process and each descendant, by ``name:pid`` (none: {})."""
    if pid is None:
        return {}
    import psutil

    root = psutil.Process(pid)
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            found[f"{proc.name()}:{proc.pid}"] = round(proc.memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:  # ended between the listing and the read
            pass
    return found


async def _load(
    client: httpx.AsyncClient, cfg: SoakConfig, sends: list[Send], seconds: float, ramp: bool
) -> list[Outcome]:
    """Send ``sends`` with up to ``max_concurrency`` clients (rising in steps when ``ramp``)."""
    queue = iter(sends)
    outcomes: list[Outcome] = []
    start = time.monotonic()

    def level() -> int:
        if not ramp:
            return cfg.max_concurrency
        step = int((time.monotonic() - start) / seconds * cfg.concurrency_steps)
        frac = min(step + 1, cfg.concurrency_steps) / cfg.concurrency_steps
        return max(1, round(cfg.max_concurrency * frac))

    async def worker(k: int) -> None:
        while time.monotonic() - start < seconds:
            if k >= level():
                await asyncio.sleep(0.2)
                continue
            send = next(queue, None)
            if send is None:
                return
            outcomes.append(await send_one(client, send, cfg.model))

    await asyncio.gather(*(worker(k) for k in range(cfg.max_concurrency)))
    return outcomes


async def wait_idle(sampler: Sampler) -> dict[str, float]:
    """The first sample with no request, KV block or decode state held (or the last one)."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        row = await sampler.sample()
        held = row["running"] + row["waiting"] + row["kv_usage"] + row["live_decodes"]
        if held == 0 or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.5)


async def soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run the four phases; the report (``summarize``) holds every outcome's verdict."""
    rng = random.Random(cfg.seed)
    pool = spec_pool(cfg.seed, cfg.pool_size, cfg.max_canvas)
    limits = httpx.Limits(max_connections=cfg.max_concurrency + 4)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
    async with httpx.AsyncClient(base_url=cfg.url, limits=limits, timeout=timeout) as client:
        sampler = Sampler(client, cfg.server_pid)
        warm_sends = draw_sends(rng, pool, 0, cfg.max_requests)
        warm = await _load(client, cfg, warm_sends, cfg.warmup_seconds, ramp=False)
        baseline = await wait_idle(sampler)
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        sends = draw_sends(rng, pool, len(warm_sends), cfg.max_requests)
        t_load = time.monotonic()
        loaded = await _load(client, cfg, sends, cfg.seconds, ramp=True)
        load_s = time.monotonic() - t_load
        stop.set()
        await sampling
        after_load = await wait_idle(sampler)
        alone = {}
        for spec in pool:  # one at a time: the answer each gets alone
            alone[spec] = await send_one(client, Send(-1, spec), cfg.model)
        end = await wait_idle(sampler)
    report = summarize(cfg, warm + loaded, alone, baseline, after_load, end, sampler, load_s)
    report["warmup_requests"] = len(warm)
    return report


def summarize(cfg, outcomes, alone, baseline, after_load, end, sampler, load_s) -> dict[str, Any]:
    """Counts, every failure with its reason, and the timelines of tokens/s and memory."""
    failures, counts = [], {"served": 0, "aborted": 0, "refused": 0, "step_limited": 0}
    for out in outcomes:
        reason = _verdict(out, alone)
        if reason:
            failures.append({"index": out.index, "reason": reason, "status": out.status})
        elif out.spec is None:
            counts["refused"] += 1
        elif out.dropped:
            counts["aborted"] += 1
        else:
            counts["served"] += 1
    alone_bad = [asdict(o)["error"] or o.finish_reason for o in alone.values() if o.status != 200]
    samples = sampler.samples
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k != "server_pid"},
        "requests": len(outcomes),
        "distinct_good_requests": len(alone),
        **counts,
        "failures": failures,
        "replay_failures": alone_bad,
        "http_5xx": sum(1 for o in [*outcomes, *alone.values()] if o.status >= 500),
        "load_seconds": round(load_s, 1),
        "max_waiting": max((s["waiting"] for s in samples), default=0),
        "max_running": max((s["running"] for s in samples), default=0),
        "baseline": baseline,
        "after_load": after_load,
        "end": end,
        "rss_growth": (end["rss_mib"] / baseline["rss_mib"] - 1) if baseline["rss_mib"] else None,
        "tokens_per_s": _windows(samples),
        "samples": samples,
    }


def _verdict(out: Outcome, alone: dict[Spec, Outcome]) -> str | None:
    """Why an outcome is wrong, or None."""
    if out.spec is None:
        return None if out.status == 400 else f"bad request answered {out.status}: {out.error}"
    if out.status != 200 or out.error:
        return f"good request failed ({out.status}): {out.error}"
    if out.dropped:
        return None
    ref = alone[out.spec]
    if out.finish_reason not in ("stop", "length") or out.stop_reason == "step_limit":
        return f"incomplete: finish_reason {out.finish_reason}, stop_reason {out.stop_reason}"
    if (out.tokens, out.finish_reason) != (ref.tokens, ref.finish_reason):
        return f"differs from alone: {len(out.tokens)} vs {len(ref.tokens)} tokens"
    return None


def _windows(samples: list[dict[str, float]]) -> list[dict[str, float]]:
    """Generated tokens per second in windows of ``WINDOW_S``, with the memory at each end."""
    rows, last = [], samples[0] if samples else None
    for s in samples[1:]:
        if s["t"] - last["t"] >= WINDOW_S:
            rate = (s["generation_tokens"] - last["generation_tokens"]) / (s["t"] - last["t"])
            rows.append({"t": s["t"], "tokens_per_s": round(rate, 1), "rss_mib": s["rss_mib"]})
            last = s
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="the server's root, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the served model name")
    p.add_argument("--server-pid", type=int, help="the server's pid (memory of its process tree)")
    p.add_argument("--json", required=True, help="where to write the report")
    for name, value in asdict(SoakConfig("", "")).items():
        if name not in ("url", "model", "server_pid"):
            p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = vars(p.parse_args(argv))
    path = args.pop("json")
    report = asyncio.run(soak(SoakConfig(**args)))
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    keys = ("requests", "served", "aborted", "refused", "http_5xx", "rss_growth", "end")
    print(json.dumps({k: report[k] for k in keys}, default=str))


if __name__ == "__main__":
    main()
