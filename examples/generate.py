"""Generate with the bundled tiny LLaDA by each method; print the text and the speed of each."""

import argparse
import time

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings
from vllm_elastic.eval.runner import load
from vllm_elastic.tasks.prompting import encode_prompt

PROMPTS = [
    "Ann has 7 apples. She buys 5 more apples. She gives 3 apples to Bob. How many apples does Ann have now?",
    "Write a Python function f(x) that returns x times 3 plus 2.",
]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="models/llada-tiny")
parser.add_argument("--gen-length", type=int, default=256)
args = parser.parse_args()
model, tokenizer = load(args.model)
prompts = [encode_prompt(tokenizer, p) for p in PROMPTS]
for method in ("llada", "fastdllm", "elastic"):
    start = time.perf_counter()
    results = generate(model, prompts, DecodeSettings(method=method, gen_length=args.gen_length))
    wall = time.perf_counter() - start
    tokens = sum(len(r.tokens) for r in results)
    print(f"== {method}: {tokens} tokens in {wall:.2f} s = {tokens / wall:.1f} tokens/s, "
          f"NFE {[r.stats.nfe for r in results]}")
    for r in results:
        print("  ", tokenizer.decode(r.tokens, skip_special_tokens=True))
