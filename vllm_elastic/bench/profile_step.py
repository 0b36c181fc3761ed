"""Where the core's decode time goes: ``torch.profiler`` over a run of held-out prompts.

  python -m vllm_elastic.bench.profile_step models/llada-tiny --method elastic --concurrency 1 \
      --num-prompts 32 --gen-length 256 [--threads 1]

Decodes the prompts with ``core.generate.generate`` in waves of C and splits the profiled CPU time
into the linear layers (``aten::linear`` and the GEMMs under it), the fused attention op, the
decision op and everything else, then lists the ops with the most self time. The bare forward's
split at batch C on canvases of the same length is printed beside it: the difference is what the
engine adds to plain packed compute (``bench/efficiency.py`` gives the ratio of the rates).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import profile

GROUPS = {  # op name -> group (by total time, so a GEMM under aten::linear counts once)
    "aten::linear": "linear",
    "vllm_elastic::elastic_attention_varlen": "attention op",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention op",
    "vllm_elastic::elastic_decide": "decision op",
}
TOP_OPS = 12


def split(prof) -> dict:
    """Milliseconds of CPU time per group; ``other`` is the rest of the total self time."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    out = {g: 0.0 for g in GROUPS.values()}
    for e in events:
        if e.key in GROUPS:
            out[GROUPS[e.key]] += e.cpu_time_total / 1e3
    out["other"] = total - sum(out.values())
    out["total"] = total
    return {k: round(v, 1) for k, v in out.items()}


def top_ops(prof, n: int = TOP_OPS) -> list[dict]:
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count}
            for e in events]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from ..core.generate import generate
    from ..core.settings import DecodeSettings
    from ..eval.runner import load
    from ..tasks import load_jsonl
    from ..tasks.prompting import encode_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--method", default="elastic")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--data", default="data/arith_test.jsonl")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in load_jsonl(args.data)]
    prompts = prompts[: args.num_prompts]
    settings = DecodeSettings(method=args.method, gen_length=args.gen_length)
    generate(model, prompts[:2], settings)  # warm
    rows = 0
    with profile() as decode:
        for lo in range(0, len(prompts), args.concurrency):
            results = generate(model, prompts[lo : lo + args.concurrency], settings)
            rows += sum(r.stats.rows_computed for r in results)
    length = max(map(len, prompts)) + args.gen_length
    ids = torch.randint(3, model.config.vocab_size, (args.concurrency, length))
    with torch.inference_mode():
        model(ids)  # warm
        with profile() as bare:
            model(ids)
    bare_rows = args.concurrency * length * model.num_layers
    for name, prof, layer_rows in (("decode", decode, rows), ("bare forward", bare, bare_rows)):
        report = {"run": name, "layer_rows": layer_rows, "ms": split(prof)}
        report["us_per_layer_row"] = {
            k: round(v * 1e3 / layer_rows, 2) for k, v in report["ms"].items()
        }
        report["top_ops"] = top_ops(prof)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
