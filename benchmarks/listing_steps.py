"""Where a model's `listing` answers go wrong: the count's steps, and a copy from ten lines up.

  python benchmarks/listing_steps.py runs/train            # every listing row of its curve.jsonl
  python benchmarks/listing_steps.py eval.json     # the answers `vllm_elastic.eval --out` wrote

Reads the sampled answers that ``python -m vllm_elastic.train.curve RUN`` stored in
``RUN/curve.jsonl`` (the first two of each row) and the held-out problems they answer
(``data/listing_{canvas}.jsonl``, in order), and prints per snapshot and canvas: whole answers
right; first lines right (the number the prompt gives); steps right (a line's number is the one
above it plus or minus one, as the prompt says); and, among the lines from the eleventh on whose
ones digit does not follow from the line above, the share whose ones digit is the one ten lines
up. In a count by one with lines of one length that digit repeats exactly ten lines down, so a
model that copies it from there, instead of counting, writes wrong ones digits that match the one
ten lines up (1.0); wrong ones digits made any other way match about one time in ten. For an
eval's JSON it prints the steps that cross a ten (a ones digit of 0 counting down, 9 counting
up) apart from the rest, how the wrong ones went (the tens digit kept, or moved against the
count), and the steps by one against the prompt's direction.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from vllm_elastic.tasks import held_out_path, load_jsonl

PERIOD = 10  # lines after which a count by one repeats its ones digit
NUMBER = re.compile(r"\s*(\d+):")


def numbers(text: str) -> list[int | None]:
    """Each line's leading number (None where a line has none)."""
    return [int(m.group(1)) if (m := NUMBER.match(line)) else None for line in text.splitlines()]


def step_facts(got: list[int | None], ref: list[int]) -> tuple[bool, int, int, int, int]:
    """(first line right, steps, steps right, lines from PERIOD on whose ones digit does not
    follow from the line above, those of them whose ones digit is the one PERIOD lines up)."""
    step = ref[1] - ref[0]
    steps = right = late_wrong = copied = 0
    for i in range(1, len(got)):
        ok = None not in (got[i], got[i - 1]) and got[i] - got[i - 1] == step
        steps, right = steps + 1, right + ok
        known = None not in (got[i], got[i - 1], got[i - PERIOD])
        if i >= PERIOD and known and (got[i] - got[i - 1] - step) % 10:
            late_wrong += 1
            copied += got[i] % 10 == got[i - PERIOD] % 10
    return got[:1] == ref[:1], steps, right, late_wrong, copied


def crossing_steps(got: list[int | None], ref: list[int]) -> Counter:
    """Counts of the steps from one line's number to the next: ``cross``, those from a ones
    digit the prompt's direction wraps (0 counting down, 9 counting up), ``cross_right``, and of
    the wrong ones ``tens_kept`` (``330`` then ``339`` counting down) and ``tens_other_way``
    (``330`` then ``349``: the ones digit right, the tens moved against the count); ``rest`` and
    ``rest_right``; and ``other_way``, steps by one against the prompt's direction."""
    step = ref[1] - ref[0]
    counts = Counter()
    for before, after in zip(got, got[1:]):
        if before is None:
            continue
        moved = None if after is None else after - before
        kind = "cross" if before % 10 == (9 if step > 0 else 0) else "rest"
        counts[kind] += 1
        counts[f"{kind}_right"] += moved == step
        counts["other_way"] += moved == -step
        if kind == "cross":
            counts["tens_kept"] += moved == -9 * step
            counts["tens_other_way"] += moved == -19 * step
    return counts


def answer_numbers(outputs: list[str], problems: list[dict]) -> list[tuple[list, list[int]]]:
    """(the numbers written, the reference's) for each answer, in the problems' order."""
    return [(numbers(o), numbers(pr["answer"])) for o, pr in zip(outputs, problems)]


def totals(facts: list[tuple]) -> list:
    """Each field of ``facts`` summed over the answers."""
    return [sum(column) for column in zip(*facts)]


def report_eval(path: Path) -> None:
    run = json.loads(path.read_text())
    pairs = answer_numbers(run["outputs"], load_jsonl(run["data"]))
    c = sum((crossing_steps(g, r) for g, r in pairs), Counter())
    print(f"{path}: {sum(run['correct'])} of {len(run['correct'])} right; steps across a ten "
          f"right {c['cross_right']} of {c['cross']} (wrong: the tens kept {c['tens_kept']}, "
          f"moved the other way {c['tens_other_way']}), the other steps {c['rest_right']} of "
          f"{c['rest']}; steps by one against the prompt's direction {c['other_way']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, help="a training run's folder, or an eval --out JSON")
    args = p.parse_args()
    if args.run.suffix == ".json":
        return report_eval(args.run)
    for row in map(json.loads, open(args.run / "curve.jsonl")):
        if row["family"] != "listing":
            continue
        problems = load_jsonl(held_out_path("listing", row["canvas"]))
        pairs = answer_numbers(row["outputs"], problems)
        first, steps, right, late_wrong, copied = totals([step_facts(g, r) for g, r in pairs])
        copy = f"{copied / late_wrong:.2f} of {late_wrong}" if late_wrong else "(none wrong)"
        print(f"step {row['step']:>5}  canvas {row['canvas']:>4}  right {row['accuracy']:.3f}  "
              f"first lines {first / len(pairs):.2f}  steps right {right / steps:.3f}  "
              f"wrong late ones digits equal to ten lines up {copy}")


if __name__ == "__main__":
    main()
