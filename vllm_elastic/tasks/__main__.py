"""``python -m vllm_elastic.tasks TASK N SEED OUT.jsonl [--canvas C]``: write n fresh problems."""

import argparse

from . import FAMILIES, make_problems, write_jsonl

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("task", choices=sorted(FAMILIES))
p.add_argument("n", type=int)
p.add_argument("seed", type=int)
p.add_argument("out")
p.add_argument("--canvas", type=int, default=None, help="size the problems for this canvas")
a = p.parse_args()
rows = make_problems(a.task, a.n, a.seed, canvas=a.canvas)
for r in rows:
    r.pop("response", None)  # the reference working stays out of the eval files
    if a.canvas:
        r["canvas"] = a.canvas
write_jsonl(rows, a.out)
