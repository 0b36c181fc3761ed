"""Step lines whose every slot is drawn anew, copied in order: a drill that forms the copy.

Prompt::

    Copy the steps:
    Step 1: Ivy buys 37 more shells.
    Step 2: Ben gives 5 eggs to Mia.
    ...
    Step 8: Leo gives her 61 pens.

Answer: the eight step lines as written.

The lines have ``story``'s sentence forms, but the subject, the operand (1 to 99), the item and
the other person are drawn for each line: nearly every token but the line's number is a copy that
only the prompt's line can give. ``recite`` is the same copy on ``story``'s own prompts, where one
token in six to eleven is one and the rest repeat from line to line. The number of lines is fixed:
a small model learns the copy within a few hundred updates when the distance from a prompt line
to its copy is about the same in every problem, and not in 800 updates when the line count (and
so that distance) varies from 2 to 9; a model that has learned it here copies ``recite``'s lines
of any count (docs/TRAINING.md, ``benchmarks/recite_copy.py --dense``), and learns the copy at any
distance from ``transcribe_varied`` (``copy_problem`` with a line count that varies). Trained on,
never reported; scored by exact match of every line.
"""

from __future__ import annotations

import random

from . import listing, story

HEADER = "Copy the steps:"
LINES = 8  # at every canvas: the answer is about 100 tokens
MAX_OPERAND = 99
FORMS = story.ADD_VERBS + story.SUB_VERBS


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in story.STEPS:
        raise ValueError(f"transcribe problems are sized for canvases {sorted(story.STEPS)}")
    return copy_problem(rng, LINES, "transcribe")


def copy_problem(rng: random.Random, count: int, task: str) -> dict:
    """``count`` step lines after the header, every slot drawn anew; the answer copies them."""
    lines = []
    for step in range(1, count + 1):
        (name, _, obj), (other, _, _) = rng.sample(story.NAMES, 2)
        form = rng.choice(FORMS)
        item = rng.choice(story.ITEMS)
        sentence = form.format(p=name, q=obj, o=other, b=rng.randint(1, MAX_OPERAND), i=item)
        lines.append(f"Step {step}: {sentence}")
    answer = "\n".join(lines)
    return {"task": task, "prompt": "\n".join([HEADER, *lines]), "answer": answer,
            "response": answer}  # fmt: skip


score = listing.score  # exact match of every line, surrounding whitespace ignored
