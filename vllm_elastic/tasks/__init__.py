"""Checkable task families: ``arith`` (GSM8K analogue) and ``code`` (HumanEval analogue)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import arith, code

FAMILIES = {"arith": arith, "code": code}


def make_problems(task: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict]:
    """n distinct problems of one family from a seed, skipping prompts in ``exclude``."""
    if task not in FAMILIES:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(FAMILIES)}")
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    while len(out) < n:
        problem = FAMILIES[task].make_problem(rng)
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
                raise ValueError(f"{path}:{i + 1}: a problem needs 'prompt' and 'answer' or 'tests'")
            rows.append(row)
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
