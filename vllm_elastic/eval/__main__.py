"""Score a decoder on a jsonl of problems (schema: docs/TASKS.md).

  python -m vllm_elastic.eval --data data/arith_test.jsonl --method llada --gen-length 256
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..tasks import load_jsonl
from .cli import add_decoder_args, settings_from_args
from .runner import load, run_problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="jsonl of problems")
    p.add_argument("--model", default="models/llada-tiny")
    p.add_argument("--method", default="llada", choices=["llada", "fastdllm", "elastic"])
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="score the first N problems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--raw-prompt", action="store_true", help="do not apply the chat template")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write outputs and scores as JSON")
    add_decoder_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = settings_from_args(args, args.method, args.gen_length)
        problems = load_jsonl(args.data)[: args.limit]
    except ValueError as err:
        p.error(str(err))
    model, tokenizer = load(args.model)
    res = run_problems(model, tokenizer, problems, settings, args.batch_size, not args.raw_prompt)
    summary = {
        "data": args.data, "method": args.method, "gen_length": args.gen_length,
        "num_problems": len(problems), "accuracy": res.accuracy, "output_tokens": res.output_tokens,
        "wall_s": res.wall_s, "nfe_mean": sum(res.nfe) / max(1, len(res.nfe)),
        "layer_token_fraction": res.layer_token_fraction,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**summary, "outputs": res.outputs, "correct": res.correct}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
