"""The copy drills under the reference sampler: whole answers, not one token at a time.

  python benchmarks/sampled_copy.py MODEL --problems 8 [--families transcribe_varied recite]
      [--short]

The probe (``vllm_elastic.train.probe``) scores copied tokens masked one at a time with the rest
of the answer visible, which the line's own words partly give away. This decodes fresh drill
problems (the probe's ``PROBE_SEED``, 777) with ``llada`` (greedy, steps = canvas) and compares
each answer with the reference: the share of answers written exactly and of lines right in place.
By default the canvas is 256 with blocks of 32, as the test bed is sampled; ``--short`` decodes
each problem in the state the drills are trained in instead: one block, the answer's length and
8 positions more.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings
from vllm_elastic.eval.runner import load
from vllm_elastic.tasks import DRILL_FAMILIES, make_problem
from vllm_elastic.tasks.prompting import encode_prompt
from vllm_elastic.train.batches import DRILL_PAD
from vllm_elastic.train.probe import PROBE_SEED

CANVAS = 256


def decode(model, tokenizer, problems: list[dict], short: bool) -> list[str]:
    prompts = [encode_prompt(tokenizer, p["prompt"], True) for p in problems]
    if short:
        results = []
        for problem, prompt in zip(problems, prompts):
            length = len(tokenizer(problem["response"], add_special_tokens=False)["input_ids"])
            s = DecodeSettings(method="llada", gen_length=length + DRILL_PAD,
                               block_length=length + DRILL_PAD)  # fmt: skip
            results += generate(model, [prompt], s)
    else:
        results = generate(model, prompts, DecodeSettings(method="llada", gen_length=CANVAS))
    return [tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in results]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--families", nargs="+", default=["transcribe_varied", "recite"],
                   choices=[f for f in DRILL_FAMILIES if f != "sums"])  # fmt: skip
    p.add_argument("--short", action="store_true", help="the drills' training state (see above)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    report = {"model": args.model, "short": args.short}
    for family in args.families:
        rng = random.Random(PROBE_SEED)
        problems = [make_problem(family, rng, CANVAS) for _ in range(args.problems)]
        texts = decode(model, tokenizer, problems, args.short)
        exact = right = lines = 0
        for problem, text in zip(problems, texts):
            want = problem["response"].strip().split("\n")
            got = text.split("\n")
            exact += got == want
            right += sum(a == b for a, b in zip(want, got))
            lines += len(want)
        report[family] = {"exact": exact / len(problems), "lines": round(right / lines, 3),
                          "first_answer": texts[0]}  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
