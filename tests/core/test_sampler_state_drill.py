"""``benchmarks/sampler_state.py``'s drill masks what the sampler leaves masked on a story line:
the step sentence bar its operand, the sign and the result; the step number, the operands and the
final answer line stay given."""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _drill():
    path = ROOT / "benchmarks/sampler_state.py"
    spec = importlib.util.spec_from_file_location("sampler_state", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_story_signs_fill_spans(monkeypatch):
    from vllm_elastic.tasks import story

    drill = _drill()
    monkeypatch.setitem(story.STEPS, drill.CANVAS, (drill.STEPS, drill.STEPS))  # as its train
    for seed in range(50):
        problem = drill.make_problem(random.Random(seed))
        answer = problem["response"]
        masked = [False] * len(answer)
        for start, end in problem["fill"]:
            assert 0 <= start < end <= len(answer)
            masked[start:end] = [True] * (end - start)
        given = "".join("#" if m else c for c, m in zip(answer, masked))
        lines = given.split("\n")
        steps = [line for line in lines if line.startswith("Step")]
        assert len(steps) == drill.STEPS  # the fixed step count, at canvas 256
        for line, want in zip(steps, answer.split("\n")):
            a, op, b, result = re.search(r"(\d+) ([+-]) (\d+) = (\d+)$", want).groups()
            sentence = want[want.index(": ") + 2 : want.rindex(f" {a} {op} ")]
            # the step number, the operand in the sentence and both operands of the sum stay
            assert line.startswith(want[: want.index(": ") + 2])
            assert line.endswith(f" {a} # {b} = {'#' * len(result)}")
            hidden = line[line.index(": ") + 2 : line.rindex(f" {a} # ")]
            k = sentence.index(f" {b} ") + 1  # the sentence's operand
            assert hidden == "#" * k + b + "#" * (len(sentence) - k - len(b)), (hidden, want)
        assert lines[-1] == answer.split("\n")[-1]  # "The answer is N." is given
