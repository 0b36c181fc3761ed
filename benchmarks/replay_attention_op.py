"""The CPU attention op on the calls of a real decode, and what its statistics cost.

    OMP_NUM_THREADS=1 python benchmarks/replay_attention_op.py [--model models/llada-tiny] \
        [--method elastic] [--concurrency 16] [--gen-length 256] [--repeats 30]

Decodes C held-out arith prompts in one ``core.generate.generate`` batch, keeping a copy of the
arguments of every ``elastic_attention_varlen`` call that reads the cache (every layer of every
step after the first, whole-canvas pass), then times the op on those calls three ways: as they
were, without tracked rows (no drift statistics), and without window or tracked rows (no
statistics at all). The differences are what the drift and the window mass cost inside the op.
Times are milliseconds for all the calls once, the median of --rounds rounds of --repeats passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vllm_elastic import ops  # noqa: E402
from vllm_elastic.core.generate import generate  # noqa: E402
from vllm_elastic.core.settings import DecodeSettings  # noqa: E402
from vllm_elastic.eval.runner import load  # noqa: E402
from vllm_elastic.tasks import load_jsonl  # noqa: E402
from vllm_elastic.tasks.prompting import encode_prompt  # noqa: E402

READS_CACHE, WINDOW, TRACKED, PREV_Q = 12, 13, 14, 15  # argument positions of the op


def capture(model, prompts, settings) -> list[list]:
    """The op's arguments at every call of one decode that reads the cache (tensors cloned)."""
    calls = []
    real = ops.elastic_attention_varlen

    def recording(*args):
        if args[READS_CACHE].any():
            calls.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        return real(*args)

    ops.elastic_attention_varlen = recording
    try:
        generate(model, prompts, settings)
    finally:
        ops.elastic_attention_varlen = real
    return calls


def without(args: list, window: bool, tracked: bool) -> list:
    """The same call with its window rows and/or tracked rows taken away."""
    args = list(args)
    if window:
        args[WINDOW] = torch.full_like(args[WINDOW], -1)
    if tracked:
        args[TRACKED] = args[TRACKED][:, :0]
        args[PREV_Q] = args[PREV_Q][:, :0]
    return args


def time_calls(calls: list[list], repeats: int, rounds: int) -> float:
    fn = torch.ops.vllm_elastic.elastic_attention_varlen
    for args in calls:
        fn(*args)  # warm
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            for args in calls:
                fn(*args)
        samples.append((time.perf_counter() - start) / repeats * 1e3)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/llada-tiny")
    ap.add_argument("--method", default="elastic")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--data", default="data/arith_test.jsonl")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not ops.HAS_CPU_KERNEL:
        raise SystemExit("the C++ extension is not built: pip install -e . builds it")
    model, tokenizer = load(args.model)
    rows = load_jsonl(args.data)[: args.concurrency]
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    settings = DecodeSettings(method=args.method, gen_length=args.gen_length)
    calls = capture(model, prompts, settings)
    layer_rows = sum(int(c[0].shape[0]) for c in calls)
    print(f"{len(calls)} calls, {layer_rows} layer-rows, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    variants = {
        "as decoded": calls,
        "no tracked rows": [without(c, window=False, tracked=True) for c in calls],
        "no statistics": [without(c, window=True, tracked=True) for c in calls],
    }
    print("| calls | ms | µs per layer-row |\n|---|---:|---:|")
    for name, variant in variants.items():
        ms = time_calls(variant, args.repeats, args.rounds)
        print(f"| {name} | {ms:.2f} | {ms * 1e3 / layer_rows:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
