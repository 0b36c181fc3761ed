"""``transcribe`` with as many lines as ``story`` has steps at the canvas: the copy at any distance.

The prompt and answer are ``transcribe``'s (a header, then step lines whose every slot is drawn
anew, copied in order), but with ``story.STEPS`` lines for the canvas (8 at 256, the same count
as ``transcribe``; 18 at 512; 38 at 1024), so the distance from a prompt line to its copy grows
with the canvas and changes from line to line, as in ``story``. From scratch a small model did
not learn the copy at distances that vary (2 to 9 lines, 450 updates); one that had learned
``transcribe``'s copy at its one distance learned it within about 250 (docs/TRAINING.md,
``benchmarks/recite_copy.py --init``). Trained on, never reported; scored by exact match of
every line.
"""

from __future__ import annotations

import random

from . import story, transcribe


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in story.STEPS:
        raise ValueError(f"transcribe_varied problems are sized for canvases {sorted(story.STEPS)}")
    return transcribe.copy_problem(rng, story.STEPS[canvas], "transcribe_varied")


score = transcribe.score
