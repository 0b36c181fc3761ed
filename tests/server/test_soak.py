"""Soak: a real server under a changing mix of work gives every request its answer and, at the
end, everything back (``vllm_elastic/bench/soak.py`` drives it; this module asserts on its report).

The mix: ``llada``, ``fastdllm`` and ``elastic`` with drawn settings, max_tokens from 1 (a block
for llada and fastdllm) to the limit, completions and chat, streamed or not, clients that drop
their stream, and bad requests between the good ones; the clients rise to 16 against a KV cache
that holds 3 whole canvases, so requests queue for blocks. The short form (CI) loads the server
for ``SOAK_SECONDS`` = 100 s. The long form:

  SOAK_SECONDS=3600 SOAK_REPORT=soak.json .venv/bin/python -m pytest -m soak tests/server/test_soak.py
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from server_helpers import MAX_MODEL_LEN, MODEL_NAME

from vllm_elastic.bench.soak import SoakConfig, soak

pytestmark = pytest.mark.soak

BLOCK_SIZE = 32
CANVASES_IN_KV = 3  # whole max_model_len canvases the KV cache holds
SERVER_FLAGS = (
    "--block-size", str(BLOCK_SIZE),
    "--num-gpu-blocks-override", str(CANVASES_IN_KV * MAX_MODEL_LEN // BLOCK_SIZE + 1),  # + null
    "--max-num-seqs", "32",
)  # fmt: skip
SECONDS = float(os.environ.get("SOAK_SECONDS", "100"))
MAX_CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "16"))
RSS_TOLERANCE = 0.10  # the server's memory at the end within 10% of where it stood after warm-up


@pytest.fixture(scope="module")
def report(server):
    cfg = SoakConfig(
        url=server.root,
        model=MODEL_NAME,
        server_pid=server.proc.pid,
        seconds=SECONDS,
        max_requests=int(SECONDS * 20),  # a bound the load phase does not reach on 2 cores
        max_concurrency=MAX_CONCURRENCY,
        max_canvas=MAX_MODEL_LEN - 64,  # the longest prompt (chat template included) fits
    )
    result = asyncio.run(soak(cfg))
    path = os.environ.get("SOAK_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


def test_every_request_answered_as_alone(report):
    assert report["failures"] == []  # good: complete and equal to alone; bad: a 400
    assert report["replay_failures"] == []
    assert report["http_5xx"] == 0
    assert report["served"] > 0 and report["aborted"] > 0 and report["refused"] > 0


def test_load_exceeded_the_kv_cache(report):
    assert report["max_waiting"] > 0  # requests queued for blocks


def test_everything_given_back(report):
    end = report["end"]
    assert end["kv_usage"] == 0  # every KV block free (the scheduler's block pool)
    assert end["running"] == 0 and end["waiting"] == 0
    assert end["live_decodes"] == 0  # the worker keeps no per-request decode state
    assert end["step_limited"] == 0  # no decode needed its step bound


def test_memory_back_to_warm_size(report):
    assert abs(report["rss_growth"]) <= RSS_TOLERANCE, (
        f"server RSS {report['baseline']['rss_mib']:.0f} MiB after warm-up, "
        f"{report['end']['rss_mib']:.0f} MiB at the end"
    )
