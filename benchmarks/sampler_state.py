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

``train`` takes ``testbed``'s arguments. It runs with ``story`` at 8 steps and canvas 256 only,
the tables patched in this process as in the fixed-step runs of docs/TRAINING.md. ``score``
decodes ``PROBLEMS`` fresh 8-step problems (seed ``PROBE_SEED``) under ``llada`` at 256. It
reports whole answers right, and two counts over the reference's step lines: the step sentence
right in its place, and the line's sum right for its own operands. Before the command,
``--natural-steps`` keeps ``story``'s own step range (2 to 9 at 256, 6 to 20 at 512) and
``--canvas C`` trains and scores at canvas C instead of 256 (at ``STEPS[C]`` steps).
"""

from __future__ import annotations

import argparse
import random
import re
import sys

from vllm_elastic import tasks
from vllm_elastic.tasks import story
from vllm_elastic.train import batches, testbed
from vllm_elastic.train.probe import PROBE_SEED

CANVAS = 256
STEPS = {256: 8, 512: 18, 1024: 38}  # the fixed step count at each canvas (under 90% of it)
PROBLEMS = 8
SUM = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)$")


def only_canvas(canvas: int, natural: bool) -> None:
    """Training at ``canvas`` alone, ``story`` at STEPS steps unless ``natural``, in this
    process."""
    if not natural:
        story.STEPS[canvas] = (STEPS[canvas], STEPS[canvas])
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
    lead.add_argument("--natural-steps", action="store_true")
    lead.add_argument("--canvas", type=int, default=CANVAS, choices=tasks.CANVASES)
    at = next((i for i, a in enumerate(argv) if a in ("train", "score")), len(argv))
    opts = lead.parse_args(argv[:at])
    argv = argv[at:]
    only_canvas(opts.canvas, opts.natural_steps)
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
