"""A numbered list whose range the prompt sets, each number spelled digit by digit (long answers).

Prompt: ``List the numbers from 130 up to 190, one per line, each followed by its digits in words.``
Answer::

    130: one three zero
    131: one three one
    ...
    190: one nine zero

The count goes up only. Each line is local: the number is the line above plus one (a carry only
when a digit wraps) and each word is a lookup of one digit. With about 8 tokens a line, a 1024
canvas holds answers of about 900 tokens. Scored by exact match of the whole list (every line, in
order, nothing missing or extra). Until 2026-12-07 half the prompts counted down (``from 190 down
to 130``): trained on ``listing`` alone for 600 updates, a model got a step across a ten right 5
times of 37 with both directions and 42 of 46 with the count up only, where the step across a
ten does not depend on a direction read from the prompt (docs/TRAINING.md).
"""

from __future__ import annotations

import random

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LOW, HIGH = 100, 999  # three-digit numbers only: every line has the same shape
# Lines per problem for each canvas (8 tokens a line): the answer fills 87% to 89% of the canvas.
# One count per canvas, as ``story``'s: the sampler places a list's line breaks first, before any
# number is written, so a count drawn per problem would be a look-up the placement cannot make.
LINES = {256: 28, 512: 57, 1024: 114}
PROMPT = ("List the numbers from {start} up to {end}, one per line, each followed by its digits "
          "in words.")  # fmt: skip


def spell(n: int) -> str:
    return f"{n}: " + " ".join(DIGIT_WORDS[int(d)] for d in str(n))


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in LINES:
        raise ValueError(f"listing problems are sized for canvases {sorted(LINES)}, not {canvas}")
    count = LINES[canvas]
    start = rng.randint(LOW, HIGH - count + 1)
    end = start + count - 1
    rng.random()  # the direction's draw of before: the held-out files keep their ranges
    return counted_problem(start, end)


def counted_problem(start: int, end: int, task: str = "listing") -> dict:
    """The problem whose answer lists ``start`` up to ``end``, under ``task``'s name (``counting``
    draws its own ranges and shares the prompt and lines)."""
    answer = "\n".join(spell(n) for n in range(start, end + 1))
    prompt = PROMPT.format(start=start, end=end)
    return {"task": task, "prompt": prompt, "answer": answer, "response": answer}


def score(text: str, problem: dict) -> bool:
    got = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return got == problem["answer"].splitlines()
