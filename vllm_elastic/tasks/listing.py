"""A numbered list whose range the prompt sets, each number spelled digit by digit (the long family).

Prompt: ``List the numbers from 130 up to 190, one per line, each followed by its digits in words.``
Answer::

    130: one three zero
    131: one three one
    ...
    190: one nine zero

Counting down (``from 190 down to 130``) is the other direction. Each line is local: the number is
the line above plus or minus one (a carry only when a digit wraps) and each word is a lookup of one
digit. With about 8 tokens a line, a 1024 canvas holds answers of about 900 tokens. Scored by exact
match of the whole list (every line, in order, nothing missing or extra).
"""

from __future__ import annotations

import random

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LOW, HIGH = 100, 999  # three-digit numbers only: every line has the same shape
# Lines per problem for each canvas (8 tokens a line): the answer fills 87% to 89% of the canvas.
# One count per canvas, as ``story``'s: the sampler places a list's line breaks first, before any
# number is written, so a count drawn per problem would be a look-up the placement cannot make.
LINES = {256: 28, 512: 57, 1024: 114}


def spell(n: int) -> str:
    return f"{n}: " + " ".join(DIGIT_WORDS[int(d)] for d in str(n))


def make_problem(rng: random.Random, canvas: int = 256) -> dict:
    if canvas not in LINES:
        raise ValueError(f"listing problems are sized for canvases {sorted(LINES)}, not {canvas}")
    count = LINES[canvas]
    start = rng.randint(LOW, HIGH - count + 1)
    end = start + count - 1
    if rng.random() < 0.5:
        numbers, words = range(start, end + 1), f"from {start} up to {end}"
    else:
        numbers, words = range(end, start - 1, -1), f"from {end} down to {start}"
    answer = "\n".join(spell(n) for n in numbers)
    prompt = f"List the numbers {words}, one per line, each followed by its digits in words."
    return {"task": "listing", "prompt": prompt, "answer": answer, "response": answer}


def score(text: str, problem: dict) -> bool:
    got = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return got == problem["answer"].splitlines()
