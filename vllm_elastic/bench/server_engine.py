"""The ``--engine server`` driver of the bench: a running OpenAI server under N concurrent clients.

  python -m vllm_elastic.bench --engine server --url http://127.0.0.1:8000 \
      --methods llada,fastdllm,elastic --gen-length 256 --concurrency 1,4,16,32 --task code

Each (method, concurrency C) row sends ``--requests`` requests (default max(2 C, 8)) through the
real ``openai`` async client, C at a time: C client tasks, each taking the next request as soon as
its previous one finished. Request i asks problem i mod ``--num-prompts``. Prompts are encoded as
in the other engines (``tasks.prompting.encode_prompt``) and sent as token ids to
``/v1/completions`` with ``max_tokens`` = gen_length and every ``DecodeSettings`` field in
``vllm_xargs``, so the server's defaults do not matter. Every request streams
(``stream_options.include_usage``):

- TTFT: from sending the request to the first chunk that carries text (the latency when the answer
  is empty); latency: to the end of the stream. Percentiles are nearest-rank.
- tokens: the server's ``usage.completion_tokens``; ``output_tokens`` leaves out the EOS that a
  ``finish_reason`` of ``stop`` counts (as the other engines count up to the first EOS), and
  tokens/s = output_tokens / the row's wall time.
- NFE, layer-row fraction (here the mean over requests) and refreshes per layer: the difference of
  the server's ``/metrics`` before and after the row (``bench/server_metrics.py``), which is exact
  only while nothing else uses the server; ``metrics_requests`` says how many requests it covers.

``outputs`` are the streamed texts as the server sent them, scored as they are. One untimed
warm-up request precedes the first row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import DecodeSettings
from ..tasks import score
from ..tasks.prompting import encode_prompt
from . import server_metrics

MIN_REQUESTS = 8
REQUEST_TIMEOUT_S = 1800.0  # one request may wait behind 31 others on a 2-core machine
CONNECT_TIMEOUT_S = 10.0


@dataclass(slots=True)
class RequestResult:
    """One streamed request: its text, the server's token count, and its timings (seconds)."""

    text: str
    completion_tokens: int
    finish_reason: str | None
    ttft_s: float
    latency_s: float

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens - (1 if self.finish_reason == "stop" else 0)


def default_requests(concurrency: int) -> int:
    return max(2 * concurrency, MIN_REQUESTS)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def request_xargs(settings: DecodeSettings) -> dict:
    """Every setting but gen_length (that is max_tokens), in types ``vllm_xargs`` accepts."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if key == "gen_length" or value is None:
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else value
    return out


def server_model(root_url: str) -> str:
    """The served model's name from ``/v1/models``; ConnectionError if no server answers."""
    try:
        with urllib.request.urlopen(root_url + "/v1/models", timeout=CONNECT_TIMEOUT_S) as r:
            models = json.loads(r.read().decode())["data"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
        raise ConnectionError(
            f"no OpenAI server answers at {root_url} ({err}); start one first, e.g. "
            f"VLLM_PLUGINS=elastic vllm-elastic serve models/llada-tiny --port 8000 --dtype float32"
        ) from err
    if not models:
        raise ConnectionError(f"the server at {root_url} serves no model")
    return models[0]["id"]


async def stream_one(client, model: str, prompt: list[int], settings: DecodeSettings):
    """Send one streamed completion; time its first text and its end."""
    start = time.perf_counter()
    stream = await client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=settings.gen_length,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"vllm_xargs": request_xargs(settings)},
    )
    pieces, ttft, finish, usage = [], None, None, None
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.text:
                if ttft is None:
                    ttft = time.perf_counter() - start
                pieces.append(choice.text)
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    latency = time.perf_counter() - start
    if usage is None:
        raise RuntimeError("the server sent no usage (stream_options.include_usage)")
    return RequestResult("".join(pieces), usage.completion_tokens, finish, ttft or latency, latency)


async def drive(url: str, model: str, prompts: list[list[int]], settings, concurrency: int):
    """All prompts through ``concurrency`` client tasks; (results in prompt order, wall seconds)."""
    import openai

    results: list[RequestResult | None] = [None] * len(prompts)
    queue = iter(range(len(prompts)))
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="EMPTY", max_retries=0, timeout=REQUEST_TIMEOUT_S
    ) as client:

        async def client_task() -> None:
            for i in queue:  # a shared iterator: each index is taken once
                results[i] = await stream_one(client, model, prompts[i], settings)

        start = time.perf_counter()
        await asyncio.gather(*(client_task() for _ in range(concurrency)))
        wall_s = time.perf_counter() - start
    return results, wall_s


class ServerBench:
    """Rows of the bench against the server at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, model_dir: str, requests: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.url = url.rstrip("/").removesuffix("/v1")
        self.model = server_model(self.url)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = json.loads((Path(model_dir) / "config.json").read_text())
        self.num_layers = int(config.get("n_layers") or config.get("num_hidden_layers") or 0)
        self.requests = requests
        self.warm = False

    def row(
        self, problems: list[dict], settings: DecodeSettings, concurrency: int, chat: bool = True
    ) -> dict:
        """One (method, concurrency) row: the bench's usual keys plus the server's."""
        n = self.requests or default_requests(concurrency)
        asked = [problems[i % len(problems)] for i in range(n)]
        prompts = [encode_prompt(self.tokenizer, p["prompt"], chat) for p in asked]
        if not self.warm:
            asyncio.run(drive(self.url, self.model, prompts[:1], settings, 1))
            self.warm = True
        before = server_metrics.scrape(self.url)
        results, wall_s = asyncio.run(drive(self.url, self.model, prompts, settings, concurrency))
        delta = server_metrics.scrape(self.url).minus(before)
        print(
            f"server: {settings.method} concurrency {concurrency}: {n} requests in {wall_s:.1f} s",
            file=sys.stderr,
        )
        if not delta.found:
            print(
                "warning: the server exports no vllm_elastic metrics (start it with "
                "VLLM_PLUGINS=elastic); NFE and refreshes are missing",
                file=sys.stderr,
            )
        out_tokens = sum(r.output_tokens for r in results)
        ttft, latency = [r.ttft_s for r in results], [r.latency_s for r in results]
        correct = [score(r.text, p) for r, p in zip(results, asked)]
        return {
            "engine": "server",
            "method": settings.method,
            "gen_length": settings.gen_length,
            "num_prompts": len(problems),
            "requests": n,
            "concurrency": concurrency,
            "accuracy": sum(correct) / n,
            "output_tokens": out_tokens,
            "completion_tokens": sum(r.completion_tokens for r in results),
            "wall_s": wall_s,
            "tokens_per_s": out_tokens / wall_s,
            "requests_per_s": n / wall_s,
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p99_s": percentile(ttft, 99),
            "latency_p50_s": percentile(latency, 50),
            "latency_p99_s": percentile(latency, 99),
            "nfe_mean": delta.nfe_mean(),
            "layer_token_fraction": delta.fraction_mean(),
            "refreshes_per_layer": delta.refreshes_per_layer(self.num_layers),
            "metrics_requests": int(delta.requests),
            "settings": dataclasses.asdict(settings),
            "finish_reasons": [r.finish_reason for r in results],
            "ttft_s": ttft,
            "latency_s": latency,
            "outputs": [r.text for r in results],
        }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(runs: list[dict]) -> None:
    head = f"{'method':<9} {'gen':>4} {'conc':>4} {'reqs':>4} {'acc':>6} {'out_tok':>7} "
    head += f"{'wall_s':>7} {'tok/s':>7} {'req/s':>6} {'ttft50':>7} {'ttft99':>7} {'lat50':>7} "
    head += f"{'lat99':>7} {'NFE':>6} {'layer-row':>9}"
    print(head)
    for r in runs:
        print(
            f"{r['method']:<9} {r['gen_length']:>4} {r['concurrency']:>4} {r['requests']:>4} "
            f"{r['accuracy']:>6.3f} {r['output_tokens']:>7} {r['wall_s']:>7.1f} "
            f"{r['tokens_per_s']:>7.2f} {r['requests_per_s']:>6.2f} {r['ttft_p50_s']:>7.2f} "
            f"{r['ttft_p99_s']:>7.2f} {r['latency_p50_s']:>7.2f} {r['latency_p99_s']:>7.2f} "
            f"{_num(r['nfe_mean'], '.1f'):>6} {_num(r['layer_token_fraction'], '.3f'):>9}"
        )
