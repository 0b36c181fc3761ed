"""Checkable task families (docs/TASKS.md).

The test bed: ``story`` (GSM8K analogue), ``program`` (HumanEval analogue) and ``listing`` (long
answers), each sized for a canvas of 256, 512 or 1024 tokens. The drills (``sums``, ``recite``,
``transcribe``, ``transcribe_varied``, ``story_signs``, ``counting``) take the same canvases but
are only trained on: ``story``'s arithmetic, its copies of the prompt, the copy itself on lines
that are nearly all copy, eight of them or as many as ``story`` has steps, ``story``'s lines in
the state the sampler leaves them in, and ``listing``'s count across a ten.
The first tiny model's families, ``arith`` and ``code``, have short answers and no canvas.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import (
    arith,
    code,
    counting,
    listing,
    program,
    recite,
    story,
    story_signs,
    sums,
    transcribe,
    transcribe_varied,
)

FAMILIES = {"arith": arith, "code": code, "story": story, "program": program, "listing": listing,
            "sums": sums, "recite": recite, "transcribe": transcribe,
            "transcribe_varied": transcribe_varied, "story_signs": story_signs,
            "counting": counting}  # fmt: skip
SIZED_FAMILIES = ("story", "program", "listing")  # the test bed: make_problem(rng, canvas)
# trained on, not reported
DRILL_FAMILIES = ("sums", "recite", "transcribe", "transcribe_varied", "story_signs", "counting")
TRAINING_FAMILIES = (*SIZED_FAMILIES, *DRILL_FAMILIES)  # what the test-bed model is trained on
# the tokenizer's corpus: the copy drills are text of ``story``'s, and leaving them
# out keeps the tokenizer (and the runs that saved it) of before
CORPUS_FAMILIES = (*SIZED_FAMILIES, "sums")
CANVASES = (256, 512, 1024)


def held_out_path(task: str, canvas: int) -> str:
    """Where the held-out problems of a sized family at one canvas live (never trained on)."""
    return f"data/{task}_{canvas}.jsonl"


def make_problem(task: str, rng: random.Random, canvas: int | None = None) -> dict:
    if task not in FAMILIES:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(FAMILIES)}")
    if task in TRAINING_FAMILIES:
        return FAMILIES[task].make_problem(rng, canvas or CANVASES[0])
    if canvas is not None:
        raise ValueError(f"task {task!r} has no canvas sizes")
    return FAMILIES[task].make_problem(rng)


def make_problems(
    task: str, n: int, seed: int, exclude: set[str] | None = None, canvas: int | None = None
) -> list[dict]:
    """n distinct problems of one family from a seed, skipping prompts in ``exclude``."""
    if task not in FAMILIES:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(FAMILIES)}")
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    while len(out) < n:
        problem = make_problem(task, rng, canvas)
        if problem["prompt"] not in seen:
            seen.add(problem["prompt"])
            out.append(problem)
    return out


def score(text: str, problem: dict) -> bool:
    """Score one generation; the family comes from the problem's ``task`` field (default arith)."""
    family = problem.get("task") or ("code" if "tests" in problem else "arith")
    if family not in FAMILIES:
        raise ValueError(f"unknown task {family!r} in problem")
    return FAMILIES[family].score(text, problem)


def load_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if line.strip():
            row = json.loads(line)
            if "prompt" not in row or not ("answer" in row or "tests" in row):
                raise ValueError(
                    f"{path}:{i + 1}: a problem needs 'prompt' and 'answer' or 'tests'"
                )
            rows.append(row)
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
