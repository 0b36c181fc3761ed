"""Short ``listing`` answers that cross a ten: a training drill for the list's borrow and carry.

Prompt and answer are ``listing``'s, with 3 to 8 lines placed so that the count crosses a ten
(``from 332 down to 327``: ``330`` then ``329``). In ``listing`` a step across a ten is one line in
ten, and its one hard token (the tens digit that changes) one token in eighty; every line from the
eleventh can also take its ones digit from ten lines up, eighty tokens back, and a model that has
learnt that copy gets the other digits of a step right without the borrow (docs/TRAINING.md). Here
every answer has a step across a ten and is too short for the copy, so the loss is on the rule
itself: the line above, plus or minus one. Trained on, never reported; scored by exact match of
every line.
"""

from __future__ import annotations

import random

from . import listing

MIN_LINES, MAX_LINES = 3, 8


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in listing.LINES:
        raise ValueError(f"counting problems are sized for canvases {sorted(listing.LINES)}")
    count = rng.randint(MIN_LINES, MAX_LINES)
    # the ten crossed, and how many of the lines come before it: the list holds
    # ten - 1 (its last number below the ten) and ten, in either direction
    ten = rng.randrange(110, listing.HIGH + 1, 10)
    below = rng.randint(1, count - 1)  # lines under the ten
    start, end = ten - below, ten - below + count - 1
    up = rng.random() < 0.5
    numbers = range(start, end + 1) if up else range(end, start - 1, -1)
    words = f"from {start} up to {end}" if up else f"from {end} down to {start}"
    answer = "\n".join(listing.spell(n) for n in numbers)
    prompt = f"List the numbers {words}, one per line, each followed by its digits in words."
    return {"task": "counting", "prompt": prompt, "answer": answer, "response": answer}


score = listing.score  # exact match of every line, surrounding whitespace ignored
