"""Accuracy against training steps: score a run's snapshots on the first problems of each file.

  python -m vllm_elastic.train.curve runs/train --limit 8 --canvases 256 512
  python -m vllm_elastic.train.curve runs/train --limit 4 --canvases 1024 --steps 4500

For every ``RUN/step_N`` (and ``RUN/model``, the latest weights; ``--steps``: those alone) not yet
in ``RUN/curve.jsonl``, each family's held-out file at each canvas is decoded by ``llada`` (the
reference sampler, steps = canvas, block 32) and one row per (step, family, canvas) is appended:
accuracy, problems, and the median answer length in tokens (the long family's target is at least
half the canvas).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

import torch

from ..core.settings import DecodeSettings
from ..eval.runner import load, run_problems
from ..tasks import SIZED_FAMILIES, held_out_path, load_jsonl


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(step, HF directory) of every kept snapshot and of the latest weights, by step."""
    found = {}
    latest = run / "state.pt"
    if latest.exists():
        found[torch.load(latest, weights_only=False)["step"]] = run / "model"
    for path in run.glob("step_*"):
        if m := re.fullmatch(r"step_(\d+)", path.name):
            found[int(m.group(1))] = path
    return sorted(found.items())


def score_snapshot(path: Path, cells: list[tuple[str, int]], limit: int) -> Iterator[dict]:
    """One row per (family, canvas), yielded as soon as it is scored."""
    model, tokenizer = load(path)
    for family, canvas in cells:
        problems = load_jsonl(held_out_path(family, canvas))[:limit]
        settings = DecodeSettings(method="llada", gen_length=canvas)
        res = run_problems(model, tokenizer, problems, settings, batch_size=limit,
                           desc=f"{path.name} {family}@{canvas}")  # fmt: skip
        lengths = [len(tokenizer.encode(text)) for text in res.outputs]
        yield {"family": family, "canvas": canvas, "accuracy": res.accuracy,
               "problems": len(problems), "median_answer_tokens": statistics.median(lengths),
               "wall_s": round(res.wall_s, 1), "outputs": res.outputs[:2]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--limit", type=int, default=8, help="first N problems of each file")
    p.add_argument("--canvases", type=int, nargs="+", default=[256])
    p.add_argument("--families", nargs="+", default=list(SIZED_FAMILIES))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="score only these snapshots (default: every one)")  # fmt: skip
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.run / "curve.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["step"], r["family"], r["canvas"]) for r in rows}
    for step, path in snapshots(args.run):
        if args.steps is not None and step not in args.steps:
            continue
        cells = [(f, c) for f in args.families for c in args.canvases if (step, f, c) not in done]
        if not cells:
            continue
        for row in score_snapshot(path, cells, args.limit):
            line = json.dumps({"step": step, **row})
            print(line)
            with out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
