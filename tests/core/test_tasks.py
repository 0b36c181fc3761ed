"""The task families: generation from a seed, scoring, and the sandbox."""

from __future__ import annotations

import random
import time

from vllm_elastic.tasks import arith, code, make_problems, score
from vllm_elastic.tasks.sandbox import run_tests


def test_reference_responses_score_correct():
    rng = random.Random(5)
    for _ in range(50):
        a = arith.make_problem(rng)
        assert score(a["response"], a)
        assert eval(a["response"].split(". The")[0].split(". ")[-1].split("=")[0]) == a["answer"]
        c = code.make_problem(rng)
        assert score(c["response"], c)


def test_wrong_answers_score_wrong():
    rng = random.Random(6)
    a = arith.make_problem(rng)
    assert not score(f"The answer is {a['answer'] + 1}.", a)
    c = code.make_problem(rng)
    assert not score(f"def {c['entry_point']} ( x ) : return 12345", c)
    assert not score("def broken(:", c)


def test_sandbox_contains_hostile_code():
    start = time.perf_counter()
    assert not run_tests("def f(x):\n    while True: pass", "f", [[1, 1]], timeout_s=2)
    assert time.perf_counter() - start < 10
    assert not run_tests("def f(x): return bytearray(10**10)", "f", [[1, 1]])
    assert not run_tests("import os\nos._exit(0)", "f", [[1, 1]])
    assert run_tests("def f(x): return x + 1", "f", [[1, 2], [5, 6]])


def test_problems_are_reproducible_and_exclusive():
    first = make_problems("arith", 20, seed=9)
    assert first == make_problems("arith", 20, seed=9)
    again = make_problems("arith", 20, seed=10, exclude={p["prompt"] for p in first})
    assert not {p["prompt"] for p in first} & {p["prompt"] for p in again}
