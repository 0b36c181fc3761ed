"""``python -m vllm_elastic.tasks TASK N SEED OUT.jsonl``: write n fresh problems of one family."""

import argparse

from . import make_problems, write_jsonl

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("task", choices=["arith", "code"])
p.add_argument("n", type=int)
p.add_argument("seed", type=int)
p.add_argument("out")
a = p.parse_args()
rows = make_problems(a.task, a.n, a.seed)
for r in rows:
    r.pop("response", None)  # the reference working stays out of the eval files
write_jsonl(rows, a.out)
