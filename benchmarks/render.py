"""Render bench JSON files as the markdown tables of BENCHMARKS.md.

python benchmarks/render.py bench-256.json [more.json ...]
"""

from __future__ import annotations

import json
import sys

SERVER_HEAD = (
    "| method | task | gen | conc | requests | accuracy | output tokens | wall s | tokens/s | requests/s "
    "| TTFT p50 s | TTFT p99 s | latency p50 s | latency p99 s | mean NFE | layer-row fraction |"
)


def server_rows(data: dict) -> list[str]:
    """``--engine server`` rows: throughput, TTFT and latency percentiles."""
    out = [
        SERVER_HEAD,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["runs"]:
        out.append(
            f"| {r['method']} | {r.get('task', '')} | {r['gen_length']} | {r['concurrency']} | "
            f"{r['requests']} | {r['accuracy']:.3f} | {r['output_tokens']} | {r['wall_s']:.1f} | "
            f"{r['tokens_per_s']:.2f} | {r['requests_per_s']:.2f} | {r['ttft_p50_s']:.2f} | "
            f"{r['ttft_p99_s']:.2f} | {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} | "
            f"{r['nfe_mean']:.1f} | {r['layer_token_fraction']:.3f} |"
        )
    return out


def rows(path: str) -> list[str]:
    with open(path) as f:
        data = json.load(f)
    if data["runs"] and data["runs"][0]["engine"] == "server":
        head = f"`{data.get('command', '')}` ({data.get('machine', '')}, {data.get('date', '')})"
        return [head, "", *server_rows(data)]
    out = [
        f"`{data.get('command', '')}` ({data.get('machine', '')}, {data.get('date', '')})",
        "",
        (
            "| engine | method | task | gen | conc | prompts | accuracy | output tokens | wall s | tokens/s "
            "| speedup vs llada | mean NFE | layer-row fraction |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
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
