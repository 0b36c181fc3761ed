"""``bench.efficiency`` end to end: the engine's layer-rows over a bare forward timed in the
engine's own worker, on the threads vLLM bound that worker to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "llada-tiny"


@pytest.mark.skipif(not (TINY / "model.safetensors").exists(), reason="no bundled tiny model")
def test_efficiency_bench_times_the_bare_forward_in_the_worker(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "eff.json"
    cmd = [sys.executable, "-m", "vllm_elastic.bench.efficiency", str(TINY), "--methods",
           "fastdllm", "--concurrency", "1,2", "--num-prompts", "2", "--gen-length", "32",
           "--json", str(out)]  # fmt: skip
    env = {**os.environ, "VLLM_PLUGINS": "elastic"}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["concurrency"]) for r in rows] == [("fastdllm", 1), ("fastdllm", 2)]
    # the same two requests at both concurrencies: the same rows and tokens (batch invariance)
    assert rows[0]["layer_rows"] == rows[1]["layer_rows"] > 0
    assert rows[0]["tokens"] == rows[1]["tokens"] > 0
    for r in rows:
        assert r["bare_rows_per_s"] > 0 and r["efficiency"] > 0
        # the worker's threads are vLLM's binding, not the bench process's
        assert 1 <= r["worker_threads"] <= os.cpu_count()
        assert r["efficiency"] == pytest.approx(r["rows_per_s"] / r["bare_rows_per_s"])


@pytest.mark.skipif(not (TINY / "model.safetensors").exists(), reason="no bundled tiny model")
def test_random_shape_writes_a_loadable_model_with_the_tokenizer(tmp_path):
    pytest.importorskip("vllm")
    from vllm_elastic.bench.efficiency import write_random_model
    from vllm_elastic.eval.runner import load

    folder = write_random_model(str(TINY), "64,2,2,128", str(tmp_path))
    model, tokenizer = load(folder)
    cfg = model.config
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size) == (
        64, 2, 2, 2, 128
    )
    tiny, tiny_tokenizer = load(str(TINY))
    assert cfg.vocab_size == tiny.config.vocab_size
    assert cfg.mask_token_id == tiny.config.mask_token_id
    assert tokenizer.encode("Ann has 7 apples.") == tiny_tokenizer.encode("Ann has 7 apples.")
