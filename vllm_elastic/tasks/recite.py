"""The steps of a ``story`` prompt recited in order: a training drill for copying from the prompt.

Prompt: a ``story`` prompt. Answer::

    Step 1: She buys 5 more apples.
    Step 2: She gives 8 apples to Bob.

Every line of ``story``'s working starts with such a copy of the prompt's line with the same number,
and its operand comes from that copy. A model that has not learned to find line k of the prompt
writes plausible steps that are not the prompt's (the test bed's fifth run: 91% of masked results
right, 0% of whole lines), so the first line of an answer, which has only the prompt to go on, is
never right. The drill is the copy alone: nothing to work out, all of it maskable. Trained on, never
reported; scored by exact match of every line.
"""

from __future__ import annotations

import random

from . import listing, story


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    base = story.make_problem(rng, canvas)
    steps = [line for line in base["prompt"].splitlines() if line.startswith("Step ")]
    answer = "\n".join(steps)
    return {"task": "recite", "prompt": base["prompt"], "answer": answer, "response": answer}


score = listing.score  # exact match of every line, surrounding whitespace ignored
