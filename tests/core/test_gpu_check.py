"""The GPU check script's --smoke mode runs on the CPU, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--smoke", "--out",
                    str(tmp_path)], check=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["decode"]
    assert {(r["method"], r["gen_length"], r["batch"]) for r in rows} == {
        (m, g, b) for m in ("llada", "fastdllm", "elastic") for g in (32, 64) for b in (1, 2)
    }
    for r in rows:
        assert r["canvas_tokens_per_s"] > 0
        assert r["nfe_mean"] <= r["gen_length"] / 4 + 1  # the fixed commit schedule held
    ops_rows = report["elastic_attention"]
    assert [r["n"] for r in ops_rows] == [128, 256]
    assert all(r["op_ms"] > 0 and r["torch_ms"] > 0 for r in ops_rows)
    varlen = report["elastic_attention_varlen"]
    assert [r["R"] for r in varlen] == [1, 2]
    assert all(r["op_ms"] > 0 and r["torch_ms"] > 0 for r in varlen)
    steps = report["step"]
    assert [r["R"] for r in steps] == [1, 2]
    assert all(r["op_ms_per_step"] > 0 and r["torch_ms_per_step"] > 0 for r in steps)
    elastic = [r for r in rows if r["method"] == "elastic"]
    assert all(r["layer_token_fraction"] < 1.0 for r in elastic)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_core_decoders_on_cuda_match_batched():
    from random_llada import random_model, random_prompts

    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings

    model = random_model().cuda()
    prompts = random_prompts(4)
    s = DecodeSettings(gen_length=32, gamma=0.99)
    batched = generate(model, prompts, s)
    alone = [generate(model, [p], s)[0] for p in prompts]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
