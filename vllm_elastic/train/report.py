"""Render the training log (train_log.jsonl) as the markdown loss curve kept in docs/TRAINING.md.

  python -m vllm_elastic.train.report models/llada-tiny/train_log.jsonl > docs/TRAINING.md
"""

from __future__ import annotations

import json
import sys

BAR_WIDTH = 50


def render(rows: list[dict], every: int = 100) -> str:
    picked = [r for r in rows if r["step"] % every == 0]
    if rows and (not picked or picked[-1] is not rows[-1]):
        picked.append(rows[-1])
    top = max(r["loss_ema"] for r in picked[1:]) if len(picked) > 1 else 1.0
    lines = ["| step | minutes | loss (EMA 0.98) | lr | |", "|---:|---:|---:|---:|:--|"]
    for r in picked:
        bar = "#" * max(1, round(BAR_WIDTH * min(r["loss_ema"], top) / top))
        lines.append(f"| {r['step']} | {r['minutes']:.1f} | {r['loss_ema']:.4f} | {r['lr']:.2e} | `{bar}` |")
    return "\n".join(lines)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "models/llada-tiny/train_log.jsonl"
    rows = [json.loads(line) for line in open(path) if line.strip()]
    for stage in sorted({r.get("stage", 1) for r in rows}):
        print(f"### Stage {stage}\n")
        print(render([r for r in rows if r.get("stage", 1) == stage]) + "\n")


if __name__ == "__main__":
    main()
