"""One-line Python functions from a short description (a HumanEval analogue), pass@1 by execution.

Prompt: ``Write a Python function f(x) that returns x times 3 plus 2.``
Answer: ``def f(x): return x * 3 + 2`` (the model writes tokens separated by spaces, which Python accepts).
Each problem carries ``entry_point`` and ``tests`` (input, expected output) computed from the description;
``vllm_elastic.tasks.sandbox`` runs the generated code in a subprocess with a timeout and resource limits.
"""

from __future__ import annotations

import random

from .sandbox import run_tests

FUNC_NAMES = ["f", "g", "h", "solve", "calc", "compute", "transform", "score", "value", "func"]
ARG_NAMES = ["x", "n", "a", "v", "num", "val"]
# (description, expression); {a} is the argument, {k} and {m} small constants.
SPECS = [
    ("{a} plus {k}", "{a} + {k}"),
    ("{a} minus {k}", "{a} - {k}"),
    ("{a} times {k}", "{a} * {k}"),
    ("{a} times {k} plus {m}", "{a} * {k} + {m}"),
    ("{a} times {k} minus {m}", "{a} * {k} - {m}"),
    ("{a} plus {k} times {m}", "{a} + {k} * {m}"),
    ("the square of {a}", "{a} * {a}"),
    ("the cube of {a}", "{a} * {a} * {a}"),
    ("the larger of {a} and {k}", "max ( {a} , {k} )"),
    ("the smaller of {a} and {k}", "min ( {a} , {k} )"),
    ("{a} modulo {k}", "{a} % {k}"),
    ("{a} divided by {k} rounded down", "{a} // {k}"),
    ("{k} if {a} is even else {m}", "{k} if {a} % 2 == 0 else {m}"),
    ("whether {a} is greater than {k}", "{a} > {k}"),
    ("whether {a} is less than {k}", "{a} < {k}"),
    ("the absolute difference of {a} and {k}", "abs ( {a} - {k} )"),
    ("the negative of {a}", "- {a}"),
]
TEST_INPUTS = [-7, 0, 3, 10, 25]


def make_problem(rng: random.Random) -> dict:
    desc, expr = rng.choice(SPECS)
    fn, arg = rng.choice(FUNC_NAMES), rng.choice(ARG_NAMES)
    k, m = rng.randint(2, 20), rng.randint(1, 20)
    fill = {"a": arg, "k": k, "m": m}
    body = expr.format(**fill)
    reference = eval(f"lambda {arg}: {body}")  # our own template, never model output
    return {
        "task": "code",
        "prompt": f"Write a Python function {fn}({arg}) that returns {desc.format(**fill)}.",
        "entry_point": fn,
        "tests": [[x, reference(x)] for x in TEST_INPUTS],
        "response": f"def {fn} ( {arg} ) : return {body}",
    }


def score(text: str, problem: dict) -> bool:
    return run_tests(text, problem["entry_point"], problem["tests"])
