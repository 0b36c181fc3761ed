"""The main job: held-out problems through vLLM and the plugin, once per method, answers scored.

For each method all problems go through one offline ``LLM.generate`` call. The demo prints every
answer and whether the task's scorer accepts it, then tokens/s, mean NFE and the speed-up over
``llada`` (tokens/s against llada's). ``--problems FILE:INDEX ...`` picks other problems.

    VLLM_PLUGINS=elastic .venv/bin/python examples/demo.py [--model DIR] [--gen-length 256]
"""

from __future__ import annotations

import argparse
import os
import time

# The bundled model writes the code family right under every method (BENCHMARKS.md §1).
PROBLEMS = ["data/code_test.jsonl:0", "data/code_test.jsonl:1", "data/code_test.jsonl:2"]
METHODS = ("llada", "fastdllm", "elastic")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="models/llada-tiny")
    p.add_argument("--gen-length", type=int, default=256, help="the canvas (max_tokens)")
    p.add_argument("--problems", nargs="+", default=PROBLEMS, help="FILE:INDEX of held-out rows")
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU default takes most RAM
    from vllm import LLM, SamplingParams

    from vllm_elastic.plugin.stats import request_stats
    from vllm_elastic.tasks import load_jsonl, score
    from vllm_elastic.tasks.prompting import encode_prompt

    problems = [load_jsonl(f)[int(i)] for f, i in (s.rsplit(":", 1) for s in args.problems)]
    llm = LLM(model=args.model, dtype="float32", enforce_eager=True, max_num_seqs=len(problems),
              max_model_len=args.gen_length + 1024)  # fmt: skip
    tok = llm.get_tokenizer()
    prompts = [{"prompt_token_ids": encode_prompt(tok, q["prompt"])} for q in problems]
    llm.generate(prompts[:1], SamplingParams(max_tokens=32), use_tqdm=False)  # warm-up, untimed
    llada_speed = None
    for method in METHODS:
        params = SamplingParams(max_tokens=args.gen_length, extra_args={"method": method})
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=True)
        wall = time.perf_counter() - start
        stats = request_stats(llm, outputs)
        tokens = sum(
            len([t for t in o.outputs[0].token_ids if t != tok.eos_token_id]) for o in outputs
        )
        speed = tokens / wall
        llada_speed = llada_speed or speed
        nfe = sum(s["nfe"] for s in stats) / len(stats)
        print(f"\n== {method}: {tokens} tokens in {wall:.1f} s = {speed:.1f} tokens/s, mean NFE "
              f"{nfe:.1f}, speed-up over llada {speed / llada_speed:.1f}x")  # fmt: skip
        for q, o in zip(problems, outputs):
            text = o.outputs[0].text
            verdict = "RIGHT" if score(text, q) else "WRONG"
            print(f"-- {verdict}: {q['prompt']}\n{text}")


if __name__ == "__main__":  # vLLM starts its engine core with spawn
    main()
