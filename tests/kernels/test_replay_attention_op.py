"""``benchmarks/replay_attention_op.py`` runs on the CPU, so the tool cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from test_elastic_attention import require_extension

ROOT = Path(__file__).resolve().parents[2]


def test_replay_times_the_calls_of_a_decode():
    require_extension()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/replay_attention_op.py"), "--concurrency", "2",
         "--gen-length", "32", "--repeats", "1", "--rounds", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    calls, layer_rows = map(int, re.search(r"(\d+) calls, (\d+) layer-rows", done.stdout).groups())
    assert calls > 0 and calls % 6 == 0  # every layer of the tiny model, steps after the first
    assert layer_rows >= calls
    rows = re.findall(r"^\| ([a-z ]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, re.M)
    assert [r[0] for r in rows] == ["as decoded", "no tracked rows", "no statistics"]
    assert all(float(ms) > 0 for _, ms, _ in rows)
