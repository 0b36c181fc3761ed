"""Short ``listing`` answers that cross a ten: a training drill for the list's carry.

Prompt and answer are ``listing``'s, with 3 to 8 lines placed so that the count crosses a ten
(``from 327 up to 332``: ``329`` then ``330``). In ``listing`` a step across a ten is one line in
ten, and its one hard token (the tens digit that changes) one token in eighty; every line from the
eleventh can also take its ones digit from ten lines up, eighty tokens back. Here every answer has
a step across a ten and is too short for that copy, so the loss is on the rule itself: the line
above, plus one. Not in the recipe: trained beside ``listing`` when the list still counted up or
down, it left the steps across a ten where they were (docs/TRAINING.md); ``--only counting``
trains it. Scored by exact match of every line.
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
    # ten - 1 (its last number below the ten) and ten
    ten = rng.randrange(listing.LOW + 10, listing.HIGH + 1, 10)
    below = rng.randint(1, count - 1)  # lines under the ten
    start, end = ten - below, ten - below + count - 1
    return listing.counted_problem(start, end, task="counting")


score = listing.score  # exact match of every line, surrounding whitespace ignored
