"""Multi-step arithmetic word problems with the working shown (a GSM8K analogue).

Prompt: ``Ann has 7 apples. She buys 5 more apples. She gives 3 apples to Bob. How many apples does Ann
have now?``  Answer: ``7 + 5 = 12. 12 - 3 = 9. The answer is 9.``  Every sentence after the first changes
the count by one operation; the answer is the count after the last one. Scored on the final number
(docs/TASKS.md gives the grammar so that anyone can generate and check fresh problems).
"""

from __future__ import annotations

import random
import re

NAMES = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dan", "He"), ("Eva", "She"),
         ("Finn", "He"), ("Gia", "She"), ("Hugo", "He"), ("Ivy", "She"), ("Jack", "He"),
         ("Kim", "She"), ("Leo", "He"), ("Mia", "She"), ("Noah", "He"), ("Olga", "She"),
         ("Paul", "He")]
ITEMS = ["apples", "pens", "books", "coins", "cards", "eggs", "balls", "cookies", "shells", "stamps",
         "marbles", "stickers"]
MAX_START, MAX_STEP, MAX_TOTAL = 20, 9, 50
ANSWER_PREFIX = "The answer is"


def _step(rng: random.Random, total: int, item: str, pron: str, other: str) -> tuple[str, str, int]:
    """One sentence and its working; returns (sentence, working, new_total)."""
    choices = ["add", "sub", "box"] + (["double"] if total <= MAX_TOTAL // 2 else [])
    kind = rng.choice(choices)
    if kind == "add" or (kind == "sub" and total < 2):
        b = rng.randint(2, min(MAX_STEP, MAX_TOTAL - total)) if total <= MAX_TOTAL - 2 else 0
        if b:
            obj = "her" if pron == "She" else "him"
            verb = rng.choice([f"{pron} buys {b} more {item}.", f"{pron} finds {b} more {item}.",
                               f"{other} gives {obj} {b} {item}."])
            return verb, f"{total} + {b} = {total + b}.", total + b
        kind = "sub"
    if kind == "box" and total <= MAX_TOTAL - 4:
        for _ in range(20):
            b, c = rng.randint(2, 5), rng.randint(2, 5)
            if total + b * c <= MAX_TOTAL:
                p = b * c
                sent = f"{pron} buys {b} boxes with {c} {item} in each box."
                return sent, f"{b} * {c} = {p}. {total} + {p} = {total + p}.", total + p
        kind = "sub"
    if kind == "double":
        return f"Then the number of {item} doubles.", f"{total} * 2 = {total * 2}.", total * 2
    b = rng.randint(1, min(MAX_STEP, total)) if total >= 1 else 0
    verb = rng.choice([f"{pron} gives {b} {item} to {other}.", f"{pron} loses {b} {item}.",
                       f"{pron} sells {b} {item}."])
    return verb, f"{total} - {b} = {total - b}.", total - b


def make_problem(rng: random.Random) -> dict:
    (name, pron), (other, _) = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    total = rng.randint(2, MAX_START)
    sentences, working = [f"{name} has {total} {item}."], []
    for _ in range(rng.randint(2, 4)):
        sent, work, total = _step(rng, total, item, pron, other)
        sentences.append(sent)
        working.append(work)
    sentences.append(f"How many {item} does {name} have now?")
    response = " ".join(working) + f" {ANSWER_PREFIX} {total}."
    return {"task": "arith", "prompt": " ".join(sentences), "answer": total, "response": response}


_ANSWER_RE = re.compile(r"The answer is\s*(-?\d+)")
_NUMBER_RE = re.compile(r"-?\d+")


def extract_answer(text: str) -> int | None:
    """The number after 'The answer is', else the last number in the text."""
    found = _ANSWER_RE.search(text)
    if found:
        return int(found.group(1))
    numbers = _NUMBER_RE.findall(text)
    return int(numbers[-1]) if numbers else None


def score(text: str, problem: dict) -> bool:
    return extract_answer(text) == int(problem["answer"])
