"""``python -m vllm_elastic.bench --engine server`` against the shared server: streaming clients
give the non-streamed outputs, token counts come from the server's usage, and the timings and
``/metrics`` differences are consistent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from server_helpers import MODEL_DIR, MODEL_NAME, free_port

from vllm_elastic.bench.__main__ import main
from vllm_elastic.bench.server_engine import request_xargs
from vllm_elastic.core.settings import DecodeSettings
from vllm_elastic.tasks import load_jsonl
from vllm_elastic.tasks.prompting import encode_prompt

GEN_LENGTH, REQUESTS, NUM_PROMPTS = 32, 3, 3
METHODS = ("elastic", "llada")
CONCURRENCY = (1, 2)
NUM_LAYERS = 6  # models/llada-tiny
DATA = MODEL_DIR.parents[1] / "data" / "arith_test.jsonl"


@pytest.fixture(scope="module")
def report(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "server.json"
    argv = [
        "--engine", "server", "--url", server.root, "--model", str(MODEL_DIR),
        "--methods", ",".join(METHODS), "--gen-length", str(GEN_LENGTH),
        "--concurrency", ",".join(map(str, CONCURRENCY)), "--requests", str(REQUESTS),
        "--num-prompts", str(NUM_PROMPTS), "--data", str(DATA), "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return {**json.loads(out.read_text()), "path": str(out)}


def test_one_row_per_method_and_concurrency_with_sane_numbers(report):
    runs = report["runs"]
    assert [(r["method"], r["concurrency"]) for r in runs] == [
        (m, c) for m in METHODS for c in CONCURRENCY
    ]
    for r in runs:
        assert r["engine"] == "server" and r["requests"] == REQUESTS
        assert len(r["outputs"]) == len(r["ttft_s"]) == len(r["latency_s"]) == REQUESTS
        assert 0 < r["output_tokens"] <= r["completion_tokens"] <= REQUESTS * GEN_LENGTH
        assert r["tokens_per_s"] == pytest.approx(r["output_tokens"] / r["wall_s"])
        assert r["requests_per_s"] == pytest.approx(REQUESTS / r["wall_s"])
        for ttft, latency in zip(r["ttft_s"], r["latency_s"]):
            assert 0 < ttft <= latency <= r["wall_s"]
        assert r["ttft_p50_s"] <= r["ttft_p99_s"] and r["latency_p50_s"] <= r["latency_p99_s"]
        assert r["ttft_p99_s"] <= r["latency_p99_s"]
        # /metrics before and after the row: exactly this row's requests
        assert r["metrics_requests"] == REQUESTS
        assert r["nfe_mean"] >= 1 and 0 < r["layer_token_fraction"] <= 1
        assert len(r["refreshes_per_layer"]) == NUM_LAYERS
    llada = [r for r in runs if r["method"] == "llada"]
    assert all(r["nfe_mean"] >= GEN_LENGTH / 2 for r in llada)  # one token per step, early stop
    assert all(r["layer_token_fraction"] == pytest.approx(1.0) for r in llada)  # no cache


def test_streamed_outputs_equal_the_non_streamed_ones(report, client, tokenizer):
    """At temperature 0 the outputs are deterministic: every row has the non-streamed text, and the
    usage-based token count is the token ids up to, not including, the EOS."""
    problems = load_jsonl(DATA)[:NUM_PROMPTS]
    for method in METHODS:
        xargs = request_xargs(DecodeSettings(method=method, gen_length=GEN_LENGTH))
        texts, tokens = [], 0
        for i in range(REQUESTS):
            out = client.completions.create(
                model=MODEL_NAME,
                prompt=encode_prompt(tokenizer, problems[i % NUM_PROMPTS]["prompt"]),
                max_tokens=GEN_LENGTH,
                extra_body={"vllm_xargs": xargs, "return_token_ids": True},
            )
            ids = out.choices[0].token_ids
            texts.append(out.choices[0].text)
            tokens += len(ids) - (ids[-1] == tokenizer.eos_token_id)
        for r in report["runs"]:
            if r["method"] == method:
                assert r["outputs"] == texts
                assert r["output_tokens"] == tokens


def test_unreachable_server_is_a_clear_error(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", "server", "--url", url, "--methods", "elastic"])
    assert exit_info.value.code == 2
    assert f"no OpenAI server answers at {url}" in capsys.readouterr().err


def test_url_needs_the_server_engine(capsys):
    with pytest.raises(SystemExit):
        main(["--engine", "vllm", "--url", "http://127.0.0.1:1"])
    assert "--url goes with --engine server" in capsys.readouterr().err


def test_refresh_plot_from_the_report(report, tmp_path):
    """benchmarks/plot_refreshes.py sums each method's refreshes per layer over the rows."""
    png = tmp_path / "refreshes.png"
    script = MODEL_DIR.parents[1] / "benchmarks" / "plot_refreshes.py"
    proc = subprocess.run(
        [sys.executable, str(script), report["path"], "--out", str(png)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in METHODS:
        rows = [r for r in report["runs"] if r["method"] == method]
        sums = [sum(layer) for layer in zip(*(r["refreshes_per_layer"] for r in rows))]
        label = "elastic (γ 0.9)" if method == "elastic" else method
        total = REQUESTS * len(CONCURRENCY)
        assert f"{label}: {total} requests, refreshes per layer {sums}" in proc.stdout
