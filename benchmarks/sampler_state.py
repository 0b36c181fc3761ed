"""Train and score ``story`` in the state the reference sampler reaches: structure and operands
written, the step sentences, signs and results still masked.

The reference sampler (``llada``) commits a story line's step number, punctuation and operands
first and the words that set its sign last (docs/TRAINING.md, "In what order the sampler writes a
line"). This experiment adds a drill, ``story_signs``: 8-step ``story`` problems at canvas 256
whose only maskable spans (``fill``) are each step sentence bar its operand, the sign and the
result, and trains it beside ``story`` (and ``sums``) from an earlier stage's model.

  python benchmarks/sampler_state.py train --out runs/signs --init runs/fixed8s/model \
      --only story sums story_signs --lr 3e-4 --warmup 20 --steps 300 --keep-every 100 --threads 2
  python benchmarks/sampler_state.py score runs/signs/model [--threads 1]

``train`` takes ``testbed``'s arguments. It runs with ``story`` at 8 steps and canvas 256 only,
the tables patched in this process as in the fixed-step runs of docs/TRAINING.md. ``score``
decodes ``PROBLEMS`` fresh 8-step problems (seed ``PROBE_SEED``) under ``llada`` at 256. It
reports whole answers right, and two counts over the reference's step lines: the step sentence
right in its place, and the line's sum right for its own operands.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import types

from vllm_elastic import tasks
from vllm_elastic.tasks import story
from vllm_elastic.train import batches, testbed
from vllm_elastic.train.probe import PROBE_SEED

CANVAS, STEPS = 256, 8
PROBLEMS = 8
FAMILY = "story_signs"
WORKING = re.compile(r"Step \d+: (.*) (\d+) ([+-]) (\d+) = (\d+)$")  # sentence, a, sign, b, result
SUM = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)$")


def fixed_steps() -> None:
    """``story`` at STEPS steps, canvas CANVAS only, in this process."""
    story.STEPS[CANVAS] = (STEPS, STEPS)
    batches.CURRICULUM = ((0.0, {c: float(c == CANVAS) for c in tasks.CANVASES}),)


def make_problem(rng: random.Random, canvas: int = CANVAS) -> dict:
    """A ``story`` problem whose step sentences (bar their operand), signs and results are its
    ``fill`` spans, as character offsets in the answer."""
    problem = story.make_problem(rng, canvas)
    fill, pos = [], 0
    for line in problem["response"].split("\n"):
        m = WORKING.match(line)
        if m:
            start, end = m.span(1)
            b = m.group(4)
            at = line.find(f" {b} ", start) + 1  # the operand inside the sentence
            if 0 < at < end:
                fill += [[pos + start, pos + at], [pos + at + len(b), pos + end]]
            else:
                fill.append([pos + start, pos + end])
            fill += [[pos + m.start(3), pos + m.end(3)], [pos + m.start(5), pos + m.end(5)]]
        pos += len(line) + 1
    return {**problem, "task": FAMILY, "fill": fill}


def register() -> None:
    """Make ``story_signs`` a drill family of this process's trainer."""
    module = types.ModuleType(FAMILY)
    module.make_problem, module.score = make_problem, story.score
    tasks.FAMILIES[FAMILY] = module
    for m in (tasks, batches, testbed):
        if hasattr(m, "DRILL_FAMILIES"):
            m.DRILL_FAMILIES = (*m.DRILL_FAMILIES, FAMILY)
        if hasattr(m, "TRAINING_FAMILIES"):
            m.TRAINING_FAMILIES = (*m.TRAINING_FAMILIES, FAMILY)


def score(model_dir: str, threads: int) -> dict:
    import torch

    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings
    from vllm_elastic.eval.runner import load
    from vllm_elastic.tasks.prompting import encode_prompt

    torch.set_num_threads(threads)
    rng = random.Random(PROBE_SEED)
    problems = [tasks.make_problem("story", rng, CANVAS) for _ in range(PROBLEMS)]
    model, tok = load(model_dir)
    prompts = [encode_prompt(tok, p["prompt"], True) for p in problems]
    results = generate(model, prompts, DecodeSettings(method="llada", gen_length=CANVAS))
    texts = [tok.decode(r.tokens, skip_special_tokens=True) for r in results]
    whole = sum(tasks.score(t, p) for t, p in zip(texts, problems))
    sentences = sums = lines = 0
    for text, problem in zip(texts, problems):
        got = text.split("\n")
        ref = [line for line in problem["response"].split("\n") if line.startswith("Step")]
        for i, want in enumerate(ref):
            lines += 1
            line = got[i] if i < len(got) else ""
            cut = line.rfind(". ")
            sentences += cut > 0 and line[: cut + 1] == want[: want.rfind(". ") + 1]
            m = SUM.search(line)
            if m:
                a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                sums += c == (a + b if op == "+" else a - b)
    return {"model": model_dir, "whole": f"{whole}/{PROBLEMS}",
            "step_sentences": round(sentences / lines, 3), "sums": round(sums / lines, 3),
            "first_answer": texts[0]}  # fmt: skip


def main(argv: list[str]) -> int:
    fixed_steps()
    if argv[:1] == ["train"]:
        register()
        testbed.train(testbed.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["score"])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    report = score(args.model, args.threads)
    print({k: v for k, v in report.items() if k != "first_answer"})
    print(report["first_answer"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
