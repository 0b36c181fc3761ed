"""The profile bench runs and splits the time: its groups add up to the total, and the decode and
the bare forward each computed the layer-rows they report."""

from __future__ import annotations

import json

from vllm_elastic.bench import profile_step


def test_profile_step_splits_the_time(capsys) -> None:
    profile_step.main(["models/llada-tiny", "--method", "elastic", "--concurrency", "2",
                       "--num-prompts", "2", "--gen-length", "32"])  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    assert [r["run"] for r in rows] == ["decode", "bare forward"]
    decode, bare = rows
    for row in rows:
        ms = row["ms"]
        assert ms["linear"] > 0 and ms["attention op"] > 0 and ms["other"] >= 0
        parts = sum(v for k, v in ms.items() if k != "total")
        assert abs(parts - ms["total"]) <= 0.5  # each group rounded to 0.1 ms
    assert decode["ms"]["decision op"] > 0  # elastic decides at every layer
    assert bare["ms"]["decision op"] == 0
    layers = 6  # models/llada-tiny
    canvas = bare["layer_rows"] // (2 * layers)  # two whole canvases, every layer
    assert bare["layer_rows"] == 2 * canvas * layers and canvas > 32
    assert 0 < decode["layer_rows"] <= bare["layer_rows"] * 32  # at most a full forward a step
