"""``transcribe`` with as many lines as ``story`` has steps at the canvas: the copy at any distance.

The prompt and answer are ``transcribe``'s (a header, then step lines whose every slot is drawn
anew, copied in order), but the line count is drawn from ``story.STEPS`` for the canvas (2 to 9 at
256, up to 40 at 1024), so the distance from a prompt line to its copy changes from problem to
problem and from line to line, as in ``story``. From scratch a small model does not learn this
copy in hundreds of updates; one that has learned ``transcribe``'s copy at its one distance
learns it within about 250 (docs/TRAINING.md, ``benchmarks/recite_copy.py --init``). Trained on,
never reported; scored by exact match of every line.
"""

from __future__ import annotations

import random

from . import story, transcribe


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in story.STEPS:
        raise ValueError(f"transcribe_varied problems are sized for canvases {sorted(story.STEPS)}")
    lo, hi = story.STEPS[canvas]
    return transcribe.copy_problem(rng, rng.randint(lo, hi), "transcribe_varied")


score = transcribe.score
