"""Train and score ``story`` in the state the reference sampler reaches: structure and operands
written, the step sentences, signs and results still masked.

The reference sampler (``llada``) commits a story line's step number, punctuation and operands
first and the words that set its sign last (docs/TRAINING.md, "In what order the sampler writes a
line"). This experiment trains the drill ``story_signs`` (``vllm_elastic.tasks.story_signs``:
``story`` problems whose only maskable spans are each step sentence bar its operand, the sign and
the result) beside ``story`` (and ``sums``) from an earlier stage's model.

  python benchmarks/sampler_state.py train --out runs/signs --init runs/fixed8s/model \
      --only story sums story_signs --lr 3e-4 --warmup 20 --steps 300 --keep-every 100 --threads 2
  python benchmarks/sampler_state.py score runs/signs/model [--threads 1]

``train`` takes ``testbed``'s arguments. It runs at canvas 256 only (the curriculum patched in
this process). ``score`` decodes ``PROBLEMS`` fresh problems (seed ``PROBE_SEED``; ``story``'s
8 steps at 256) under ``llada`` at 256. It reports whole answers right, and two counts over the
reference's step lines: the step sentence right in its place, and the line's sum right for its
own operands. Before the command, ``--canvas C`` trains and scores at canvas C instead (18 steps
at 512, 38 at 1024).

The runs of docs/TRAINING.md that name ``--natural-steps`` or a fixed count were made while
``story`` drew 2 to 9 steps at 256 (6 to 20 at 512): this script then patched the count to 8
(18 at 512), or kept the range with ``--natural-steps``. ``story`` has one count per canvas now,
so both are what the family itself draws; the problems a seed gives are not those of then.
"""

from __future__ import annotations

import argparse
import random
import re
import sys

from vllm_elastic import tasks
from vllm_elastic.train import batches, testbed
from vllm_elastic.train.probe import PROBE_SEED

CANVAS = 256
PROBLEMS = 8
SUM = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)$")


def only_canvas(canvas: int) -> None:
    """Training at ``canvas`` alone, in this process."""
    batches.CURRICULUM = ((0.0, {c: float(c == canvas) for c in tasks.CANVASES}),)


def score(model_dir: str, threads: int, canvas: int = CANVAS, n: int = PROBLEMS) -> dict:
    import torch

    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings
    from vllm_elastic.eval.runner import load
    from vllm_elastic.tasks.prompting import encode_prompt

    torch.set_num_threads(threads)
    rng = random.Random(PROBE_SEED)
    problems = [tasks.make_problem("story", rng, canvas) for _ in range(n)]
    model, tok = load(model_dir)
    prompts = [encode_prompt(tok, p["prompt"], True) for p in problems]
    results = generate(model, prompts, DecodeSettings(method="llada", gen_length=canvas))
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
    return {"model": model_dir, "canvas": canvas, "whole": f"{whole}/{n}",
            "step_sentences": round(sentences / lines, 3), "sums": round(sums / lines, 3),
            "first_answer": texts[0]}  # fmt: skip


def main(argv: list[str]) -> int:
    lead = argparse.ArgumentParser(add_help=False)
    lead.add_argument("--canvas", type=int, default=CANVAS, choices=tasks.CANVASES)
    at = next((i for i, a in enumerate(argv) if a in ("train", "score")), len(argv))
    opts = lead.parse_args(argv[:at])
    argv = argv[at:]
    only_canvas(opts.canvas)
    if argv[:1] == ["train"]:
        testbed.train(testbed.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["score"])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--problems", type=int, default=PROBLEMS)
    args = ap.parse_args(argv)
    report = score(args.model, args.threads, opts.canvas, args.problems)
    print({k: v for k, v in report.items() if k != "first_answer"})
    print(report["first_answer"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
