"""Independent sums, one per line: a training drill for the arithmetic of ``story``'s working.

Prompt::

    Work out each line:
    47 + 5
    82 - 4

Answer::

    47 + 5 = 52
    82 - 4 = 78

Each line is ``story``'s working line without the story: a total in 0..99 plus or minus one digit,
the result in 0..99. The operands are in the prompt and no line depends on another, so every masked
result is a sum the model has to work out: in ``story`` a result is also written as the next step's
left operand, and a model trained on ``story`` alone learns to read it from there instead.

``fill`` marks the results: training masks only them (the rest of the answer is given, as the
operands are when the sampler reaches a result). Masking the operands too would leave most masked
results without their operands, and a model of the test bed's size did not learn the sums that way
in hundreds of updates (docs/TRAINING.md). Not part of the test bed's held-out sets (it is not a
task we report); scored by exact match of every line.
"""

from __future__ import annotations

import random

from . import listing
from .story import MAX_OPERAND, MAX_TOTAL

HEADER = "Work out each line:"
# Lines per problem for each canvas (about 10 answer tokens a line).
LINES = {256: (6, 20), 512: (15, 40), 1024: (30, 80)}


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in LINES:
        raise ValueError(f"sums problems are sized for canvases {sorted(LINES)}, not {canvas}")
    asks, lines = [], []
    for _ in range(rng.randint(*LINES[canvas])):
        a = rng.randint(0, MAX_TOTAL)
        op = rng.choice("+-") if 0 < a < MAX_TOTAL else ("+" if a == 0 else "-")
        b = rng.randint(1, min(MAX_OPERAND, MAX_TOTAL - a if op == "+" else a))
        asks.append(f"{a} {op} {b}")
        lines.append(f"{asks[-1]} = {a + b if op == '+' else a - b}")
    answer = "\n".join(lines)
    fill, pos = [], 0  # the results, as [start, end) character offsets in the answer
    for line in lines:
        fill.append([pos + line.index("= ") + 2, pos + len(line)])
        pos += len(line) + 1
    return {"task": "sums", "prompt": "\n".join([HEADER, *asks]), "answer": answer,
            "response": answer, "fill": fill}  # fmt: skip


score = listing.score  # exact match of every line, surrounding whitespace ignored
