"""In what order the reference sampler writes an answer: each position's token and its step.

  python benchmarks/sampler_order.py MODEL FAMILY [--blocks 2] [--seed 777] [--canvas 256]

Decodes the first ``--blocks`` blocks of one fresh problem of FAMILY (seed ``--seed``) with the
rule of ``llada`` at steps = canvas (one token a step): in the current block of ``BLOCK`` positions
it commits the masked position whose most likely token is most probable (``policy.confidence``,
the decoders' rule). It prints the reference answer's start, then every decoded position as
``token@step``. Written out over ``model(ids)`` so that the order can be read; the decoders do not
record it.
"""

from __future__ import annotations

import argparse
import random
import sys

import torch

from vllm_elastic import tasks
from vllm_elastic.core import policy
from vllm_elastic.eval.runner import load
from vllm_elastic.tasks.prompting import encode_prompt

BLOCK = 32


@torch.no_grad()
def commit_order(model, prompt: list[int], mask_id: int, canvas: int, blocks: int) -> list:
    """[(token id, step)] for the first ``blocks`` blocks of the canvas."""
    ids = torch.tensor([prompt + [mask_id] * canvas])  # [1, P + canvas]
    start, step_of = len(prompt), {}
    for b in range(blocks):
        lo, hi = start + BLOCK * b, start + BLOCK * (b + 1)
        for s in range(BLOCK):
            conf, best = policy.confidence(model(ids)[0, lo:hi], mask_id)  # [BLOCK] each
            conf[ids[0, lo:hi] != mask_id] = -1.0
            at = int(conf.argmax())
            ids[0, lo + at] = best[at]
            step_of[lo + at] = BLOCK * b + s
    return [(int(ids[0, i]), step_of[i]) for i in range(start, start + BLOCK * blocks)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("family", choices=sorted(tasks.SIZED_FAMILIES))
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--canvas", type=int, default=256, choices=tasks.CANVASES)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load(args.model)
    problem = tasks.make_problem(args.family, random.Random(args.seed), args.canvas)
    prompt = encode_prompt(tok, problem["prompt"], True)
    order = commit_order(model, prompt, tok.mask_token_id, args.canvas, args.blocks)
    print(problem["response"][: 8 * BLOCK * args.blocks // 4])
    print(" ".join(f"{tok.decode([t])!r}@{s}" for t, s in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
