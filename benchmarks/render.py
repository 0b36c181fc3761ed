"""Render bench JSON files as the markdown tables of BENCHMARKS.md.

  python benchmarks/render.py bench-256.json [more.json ...]
"""

from __future__ import annotations

import json
import sys


def rows(path: str) -> list[str]:
    data = json.load(open(path))
    out = [f"`{data.get('command', '')}` ({data.get('machine', '')}, {data.get('date', '')})", "",
           "| engine | method | task | gen | conc | prompts | accuracy | output tokens | wall s | tokens/s "
           "| speedup vs llada | mean NFE | layer-row fraction |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["runs"]:
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        out.append(
            f"| {r['engine']} | {r['method']} | {r.get('task', '')} | {r['gen_length']} | "
            f"{r['concurrency']} | {r['num_prompts']} | {r['accuracy']:.3f} | {r['output_tokens']} | "
            f"{r['wall_s']:.1f} | {r['tokens_per_s']:.2f} | {speed} | {r['nfe_mean']:.1f} | "
            f"{r['layer_token_fraction']:.3f} |"
        )
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(rows(p)) + "\n")
