"""scripts/demo.sh's program: the bundled model through vLLM, one line per method, answers right."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHOD_LINE = re.compile(
    r"== (\w+): (\d+) tokens in [\d.]+ s = [\d.]+ tokens/s, mean NFE ([\d.]+), "
    r"speed-up over llada ([\d.]+)x"
)


def test_demo_runs_every_method_through_vllm_and_its_answers_are_right():
    env = {**os.environ, "VLLM_PLUGINS": "elastic", "VLLM_LOGGING_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "examples/demo.py", "--gen-length", "64"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = METHOD_LINE.findall(proc.stdout)
    assert [r[0] for r in rows] == ["llada", "fastdllm", "elastic"], proc.stdout
    assert float(rows[0][3]) == 1.0
    assert len({r[1] for r in rows}) == 1 and int(rows[0][1]) > 0  # same answers, same length
    nfe = {r[0]: float(r[2]) for r in rows}
    assert nfe["elastic"] < nfe["llada"] and nfe["fastdllm"] < nfe["llada"]
    verdicts = re.findall(r"^-- (RIGHT|WRONG):", proc.stdout, flags=re.MULTILINE)
    assert verdicts == ["RIGHT"] * len(verdicts) and len(verdicts) == 9, proc.stdout
