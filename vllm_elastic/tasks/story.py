"""Word problems with a running total, one short line of working per step (a GSM8K analogue).

Prompt (the number of steps sets the answer's length; the canvas sets the number of steps)::

    Ann has 47 apples.
    Step 1: She buys 5 more apples.
    Step 2: She gives 8 apples to Bob.
    How many apples does Ann have at the end?

Answer::

    Step 1: She buys 5 more apples. 47 + 5 = 52
    Step 2: She gives 8 apples to Bob. 52 - 8 = 44
    The answer is 44.

Each line is a local step a small model can learn: it starts with a copy of the prompt line with the
same number (a copy that continues what the line started, the pattern attention learns first),
then takes the sign from that sentence's verb and the operand from its number, the left operand
from the line above, and the result adds or subtracts one digit (1..9) from a total that stays in
0..99. Nothing on a line needs a look-up of a distant fact beyond the copy. Only the final number
is scored.
"""

from __future__ import annotations

import random
import re

NAMES = [("Ann", "She", "her"), ("Ben", "He", "him"), ("Cara", "She", "her"), ("Dan", "He", "him"),
         ("Eva", "She", "her"), ("Finn", "He", "him"), ("Gia", "She", "her"), ("Hugo", "He", "him"),
         ("Ivy", "She", "her"), ("Jack", "He", "him"), ("Kim", "She", "her"), ("Leo", "He", "him"),
         ("Mia", "She", "her"), ("Noah", "He", "him"), ("Olga", "She", "her"), ("Paul", "He", "him")]  # fmt: skip
ITEMS = ["apples", "pens", "books", "coins", "cards", "eggs", "balls", "cookies", "shells", "stamps",
         "marbles", "stickers"]  # fmt: skip
ADD_VERBS = ["{p} buys {b} more {i}.", "{p} finds {b} {i}.", "{o} gives {q} {b} {i}."]
SUB_VERBS = ["{p} gives {b} {i} to {o}.", "{p} loses {b} {i}.", "{p} sells {b} {i}."]
MAX_TOTAL, MAX_OPERAND = 99, 9
# Steps per problem for each canvas: the working (about 22 tokens a line) fills 63% to 85% of it.
# One count per canvas: with a count drawn per problem (2 to 9 at 256), a small model wrote more
# lines than the prompt had steps. The sampler writes a line's step number before its words, and
# whether the prompt has that step is a look-up at a distance that moves with the lines' lengths;
# with one count it learned whole answers (docs/TRAINING.md, "Training in that state").
STEPS = {256: 8, 512: 18, 1024: 38}
ANSWER_PREFIX = "The answer is"


def _operation(rng: random.Random, total: int) -> tuple[str, int]:
    """'+' or '-' and an operand in 1..9 that keeps the total in 0..MAX_TOTAL."""
    can_add, can_sub = total + 1 <= MAX_TOTAL, total >= 1
    op = rng.choice("+-") if can_add and can_sub else ("+" if can_add else "-")
    room = MAX_TOTAL - total if op == "+" else total
    return op, rng.randint(1, min(MAX_OPERAND, room))


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in STEPS:
        raise ValueError(f"story problems are sized for canvases {sorted(STEPS)}, not {canvas}")
    (name, pron, obj), (other, _, _) = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    total = rng.randint(0, MAX_TOTAL)
    prompt, working = [f"{name} has {total} {item}."], []
    for step in range(1, STEPS[canvas] + 1):
        op, b = _operation(rng, total)
        verb = rng.choice(ADD_VERBS if op == "+" else SUB_VERBS)
        sentence = verb.format(p=pron, q=obj, o=other, b=b, i=item)
        prompt.append(f"Step {step}: {sentence}")
        new = total + b if op == "+" else total - b
        working.append(f"Step {step}: {sentence} {total} {op} {b} = {new}")
        total = new
    prompt.append(f"How many {item} does {name} have at the end?")
    response = "\n".join(working + [f"{ANSWER_PREFIX} {total}."])
    return {"task": "story", "prompt": "\n".join(prompt), "answer": total, "response": response}


_ANSWER_RE = re.compile(r"The answer is\s*(-?\d+)")


def score(text: str, problem: dict) -> bool:
    """The number after 'The answer is' equals the answer (no fallback: the line must be there)."""
    found = _ANSWER_RE.search(text)
    return found is not None and int(found.group(1)) == int(problem["answer"])
