"""Count what one steady-state decode step launches: aten ops and host syncs, at several batch sizes.

  python -m vllm_elastic.bench.count_ops models/llada-tiny --methods llada,fastdllm,elastic \
      --batches 1,4,16,64 --gen-length 256 --json counts.json

Counting, not timing: the numbers are the same on a busy or an idle machine, and they predict the
host overhead of a step on a GPU (every aten op is a kernel launch or host work; every sync stalls
the host until the device catches up). A batched step launches the same ops whatever the number of
requests R; ``ops_per_request`` is the slope between the smallest and the largest R.

Syncs counted: ``item``, ``tolist``, ``__bool__``, ``__int__``, ``__float__``, ``__index__``, ``cpu``,
``nonzero``, ``unique``, ``equal``, ``any``, ``all`` and boolean-mask indexing, on tensors.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_FUNCS = {
    "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "nonzero",
    "unique", "equal", "any", "all",
}
PROMPT = (
    "Ann has 7 apples. She buys 5 more apples. She gives 3 apples to Bob. Then the number of "
    "apples doubles. She loses 4 apples. How many apples does Ann have now?"
)
WARM_STEPS = 3  # past the first (full) forward and into steady state


class OpCount(TorchDispatchMode):
    """Every aten op dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


class SyncCount(TorchFunctionMode):
    """Every tensor call that makes the host wait for the device's values."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.by_name: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        bool_index = (
            name == "__getitem__" and len(args) > 1 and isinstance(args[1], torch.Tensor)
            and args[1].dtype == torch.bool
        )
        if name in SYNC_FUNCS or bool_index:
            self.syncs += 1
            self.by_name[name] = self.by_name.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def count(fn) -> tuple[int, int, dict]:
    """(aten ops, host syncs, syncs by name) of one call of ``fn``."""
    ops, syncs = OpCount(), SyncCount()
    with syncs, ops:
        fn()
    return ops.ops, syncs.syncs, syncs.by_name


def count_core_step(model, prompt: list[int], settings, batch: int) -> dict:
    """One ``core.generate.step`` of ``batch`` copies of a request, after ``WARM_STEPS`` steps."""
    from ..core.generate import new_state, step
    from ..core.kv_pool import KVPool

    pool = KVPool.for_model(model)
    states = [new_state(model, prompt, settings, pool=pool) for _ in range(batch)]
    for _ in range(WARM_STEPS):
        step(model, states)
    active = sum(not s.done for s in states)
    ops, syncs, by_name = count(lambda: step(model, states))
    return {"R": batch, "active": active, "aten_ops": ops, "syncs": syncs, "syncs_by": by_name}


def slope(rows: list[dict]) -> dict:
    """Ops and syncs added per extra request, between the smallest and the largest batch."""
    a, b = rows[0], rows[-1]
    extra = b["R"] - a["R"]
    return {
        "ops_per_request": (b["aten_ops"] - a["aten_ops"]) / extra if extra else 0.0,
        "syncs_per_request": (b["syncs"] - a["syncs"]) / extra if extra else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    from ..core.settings import DecodeSettings
    from ..eval.runner import load
    from ..tasks.prompting import encode_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--methods", default="llada,fastdllm,elastic")
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model, tokenizer = load(args.model)
    prompt = encode_prompt(tokenizer, PROMPT)
    report = {"command": " ".join(sys.argv), "methods": {}}
    for method in args.methods.split(","):
        settings = DecodeSettings(method=method, gen_length=args.gen_length)
        rows = [count_core_step(model, prompt, settings, int(r)) for r in args.batches.split(",")]
        report["methods"][method] = {"rows": rows, **slope(rows)}
        for row in rows:
            print(json.dumps({"method": method, **row}))
        print(json.dumps({"method": method, **slope(rows)}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
