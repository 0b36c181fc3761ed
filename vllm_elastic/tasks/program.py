"""Multi-line Python functions written from a numbered list of steps (a HumanEval analogue).

Prompt (the number of steps sets the function's length; the canvas sets the number of steps)::

    Write a Python function calc(n) that starts from the integer n, applies these steps in order
    and returns the result:
    1. add 3
    2. if it is even, multiply by 2
    3. repeat 4 times: subtract 1
    4. negate it

Answer::

    def calc(n):
        # 1. add 3
        n = n + 3
        # 2. if it is even, multiply by 2
        if n % 2 == 0:
            n = n * 2
        # 3. repeat 4 times: subtract 1
        for _ in range(4):
            n = n - 1
        # 4. negate it
        n = -n
        return n

Each step is a comment that copies the prompt line with the next number (a copy that continues
what the line started, the pattern attention learns first), then its code: a local translation of
the comment right above it (no arithmetic to do), so no line needs to count which step it is on. Scored pass@1 by running
the function on fixed inputs in the sandbox (``tasks/sandbox.py``); the expected outputs come from
interpreting the steps, never from executing model output in this process.
"""

from __future__ import annotations

import random

from .sandbox import run_tests

FUNC_NAMES = ["f", "g", "h", "solve", "calc", "compute", "transform", "update", "value", "step"]
ARG_NAMES = ["x", "n", "a", "v", "num", "val", "total", "count"]
TEST_INPUTS = [-40, -7, -2, 0, 1, 3, 10, 25, 64, 99]
# Steps per problem for each canvas (about 24 tokens a step: its comment and its code): one count
# per canvas, as ``story``'s, so that where a function ends never hangs on a count read from afar.
STEPS = {256: 7, 512: 15, 1024: 31}
INDENT = "    "
# kind: (prompt text, code lines). {v} the variable, {k} and {m} small constants.
OPS = {
    "add": ("add {k}", ["{v} = {v} + {k}"]),
    "sub": ("subtract {k}", ["{v} = {v} - {k}"]),
    "mul": ("multiply by {k}", ["{v} = {v} * {k}"]),
    "div": ("divide by {k}, rounding down", ["{v} = {v} // {k}"]),
    "neg": ("negate it", ["{v} = -{v}"]),
    "even": ("if it is even, add {k}", ["if {v} % 2 == 0:", INDENT + "{v} = {v} + {k}"]),
    "odd": ("if it is odd, subtract {k}", ["if {v} % 2 == 1:", INDENT + "{v} = {v} - {k}"]),
    "big": (
        "if it is greater than {k}, subtract {m}",
        ["if {v} > {k}:", INDENT + "{v} = {v} - {m}"],
    ),
    "small": ("if it is less than {k}, add {m}", ["if {v} < {k}:", INDENT + "{v} = {v} + {m}"]),
    "loop": ("repeat {k} times: add {m}", ["for _ in range({k}):", INDENT + "{v} = {v} + {m}"]),
}
# Constants: k for mul/div/loop stays small so values do not explode over dozens of steps.
SMALL_K = {"mul", "div", "loop"}


def _apply(kind: str, x: int, k: int, m: int) -> int:
    """The meaning of one step (the oracle for the tests)."""
    rules = {
        "add": lambda: x + k, "sub": lambda: x - k, "mul": lambda: x * k, "div": lambda: x // k,
        "neg": lambda: -x,
        "even": lambda: x + k if x % 2 == 0 else x, "odd": lambda: x - k if x % 2 == 1 else x,
        "big": lambda: x - m if x > k else x, "small": lambda: x + m if x < k else x,
        "loop": lambda: x + k * m,
    }  # fmt: skip
    return rules[kind]()


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in STEPS:
        raise ValueError(f"program problems are sized for canvases {sorted(STEPS)}, not {canvas}")
    fn, var = rng.choice(FUNC_NAMES), rng.choice(ARG_NAMES)
    steps = []
    for _ in range(STEPS[canvas]):
        kind = rng.choice(sorted(OPS))
        k = rng.randint(2, 5) if kind in SMALL_K else rng.randint(1, 20)
        steps.append((kind, k, rng.randint(1, 9)))
    lines, body = [], [f"def {fn}({var}):"]
    for i, (kind, k, m) in enumerate(steps, start=1):
        text, code = OPS[kind]
        lines.append(f"{i}. " + text.format(k=k, m=m))
        body.append(f"{INDENT}# {lines[-1]}")
        body += [INDENT + c.format(v=var, k=k, m=m) for c in code]
    body.append(f"{INDENT}return {var}")
    head = (f"Write a Python function {fn}({var}) that starts from the integer {var}, applies these "
            "steps in order and returns the result:")  # fmt: skip
    tests = []
    for x in TEST_INPUTS:
        y = x
        for kind, k, m in steps:
            y = _apply(kind, y, k, m)
        tests.append([x, y])
    return {"task": "program", "prompt": "\n".join([head, *lines]), "entry_point": fn,
            "tests": tests, "response": "\n".join(body)}  # fmt: skip


def score(text: str, problem: dict) -> bool:
    return run_tests(text, problem["entry_point"], problem["tests"])
