"""Per-request compute stats kept by the runner, and ``bench --engine vllm`` against the reference.

The bench test starts its own engine on the bundled tiny model (it needs a tokenizer and a chat
template, which the random checkpoint of the other modules does not have), in a subprocess, as a
user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_elastic.bench.__main__ import main as bench_main
from vllm_elastic.plugin.stats import RecentStats

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "llada-tiny"
ARITH = ROOT / "data" / "arith_test.jsonl"


def test_recent_stats_bounded_and_found_by_external_id():
    recent = RecentStats(capacity=3)
    for i in range(5):
        recent.record(f"{i}-abcd{i:04d}", {"nfe": i})  # vLLM's internal ids: "<given>-<8 chars>"
    assert len(recent) == 3  # the two oldest were dropped
    assert recent.lookup(["0", "2", "4-abcd0004", "4", "9"]) == [
        None,
        {"nfe": 2},
        {"nfe": 4},
        {"nfe": 4},
        None,
    ]
    recent.record("2-ffffffff", {"nfe": 7})  # an id given again: the newest request wins
    assert recent.lookup(["2"]) == [{"nfe": 7}]


@pytest.mark.skipif(not (TINY / "model.safetensors").exists(), reason="no bundled tiny model")
def test_bench_vllm_rows_match_reference(tmp_path):
    pytest.importorskip("vllm")
    model = tmp_path / "llada-tiny"
    shutil.copytree(TINY, model)  # one snapshot for both engines
    common = ["--model", str(model), "--data", str(ARITH), "--methods", "llada,fastdllm,elastic"]
    common += ["--gen-length", "32", "--num-prompts", "2", "--concurrency", "1,2"]
    bench_main(["--engine", "reference", *common, "--json", str(tmp_path / "ref.json")])
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [sys.executable, "-m", "vllm_elastic.bench", "--engine", "vllm", *common]
    subprocess.run([*cmd, "--json", str(tmp_path / "vllm.json")], check=True, env=env, cwd=ROOT)
    ref = json.loads((tmp_path / "ref.json").read_text())
    got = json.loads((tmp_path / "vllm.json").read_text())
    assert set(got) == set(ref)
    assert [(r["method"], r["concurrency"]) for r in got["runs"]] == [
        (r["method"], r["concurrency"]) for r in ref["runs"]
    ]
    for r, g in zip(ref["runs"], got["runs"]):
        assert set(g) == set(r) and g["engine"] == "vllm"
        assert g["outputs"] == r["outputs"] and len(g["outputs"]) == 2
        assert g["output_tokens"] == r["output_tokens"] and g["settings"] == r["settings"]
        assert g["nfe_mean"] > 0 and 0 < g["layer_token_fraction"] <= 1
        for row in (r, g):  # elastic's drift tests ran at every layer; the others run none
            means = row["drift_similarity_mean_per_layer"]
            lows = row["drift_similarity_min_per_layer"]
            if row["method"] != "elastic":
                assert set(means) == set(lows) == {None}
                continue
            assert all(-1 <= low <= mean <= 1 + 1e-9 for mean, low in zip(means, lows))
