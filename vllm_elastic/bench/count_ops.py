"""Count what one steady-state decode step launches: aten ops and host syncs, at several batches.

  python -m vllm_elastic.bench.count_ops models/llada-tiny --methods llada,fastdllm,elastic \
      --batches 1,4,16,64 --gen-length 256 --json counts.json [--engine vllm]

``--engine core`` (default) counts one ``core.generate.step`` (``--by-site``: also per package
function that launched each op); ``--engine vllm`` counts one whole
engine step of ``vllm.LLM`` with the plugin (the runner's ``execute_model`` and ``sample_tokens``,
vLLM's own input preparation included), through the worker RPC ``elastic_count_steps``, with one
denoising step per engine step (``steps_per_schedule`` 1).

Counting, not timing (``core/op_count.py``): the same numbers on a busy or an idle machine. A
batched step launches the same ops whatever the number of requests R; ``ops_per_request`` is the
slope between the smallest and the largest R.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.op_count import counting

PROMPT = (
    "Ann has 7 apples. She buys 5 more apples. She gives 3 apples to Bob. Then the number of "
    "apples doubles. She loses 4 apples. How many apples does Ann have now?"
)
WARM_STEPS = 3  # past the first (full) forward and into steady state


def count_core_step(model, prompt: list[int], settings, batch: int, by_site: bool = False) -> dict:
    """One ``core.generate.step`` of ``batch`` copies of a request, after ``WARM_STEPS`` steps."""
    from ..core.generate import new_state, step
    from ..core.kv_pool import KVPool

    pool = KVPool.for_model(model)
    states = [new_state(model, prompt, settings, pool=pool) for _ in range(batch)]
    for _ in range(WARM_STEPS):
        step(model, states)
    active = sum(not s.done for s in states)
    counts = counting(lambda: step(model, states), by_site)
    return {"R": batch, "active": active, **counts.to_dict()}


def count_engine_step(bench, prompt: list[int], settings, batch: int) -> dict:
    """One engine step with ``batch`` requests running, after ``WARM_STEPS`` steps."""
    from .vllm_engine import sampling_params

    engine = bench.llm.llm_engine
    params = sampling_params(settings)
    ids = [f"count-{batch}-{i}" for i in range(batch)]
    for req_id in ids:
        engine.add_request(req_id, {"prompt_token_ids": prompt}, params)
    for _ in range(WARM_STEPS + 1):  # the first step admits them
        engine.step()
    bench.llm.collective_rpc("elastic_count_steps", args=(1,))
    engine.step()
    (counts,) = bench.llm.collective_rpc("elastic_step_counts")[:1]
    engine.abort_request(ids)
    while engine.has_unfinished_requests():
        engine.step()
    if not counts:
        raise RuntimeError("the counted engine step decoded nothing")
    return {"R": batch, "active": counts[0]["requests"], **counts[0]}


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
    ap.add_argument("--engine", choices=("core", "vllm"), default="core")
    ap.add_argument("--refresh-mode", choices=("immediate", "deferred"), default="immediate")
    ap.add_argument("--by-site", action="store_true",
                    help="core engine: also count the ops by the package function launching them")
    args = ap.parse_args(argv)
    if args.by_site and args.engine != "core":
        ap.error("--by-site counts the core step only")
    model, tokenizer = load(args.model)
    prompt = encode_prompt(tokenizer, PROMPT)
    batches = [int(r) for r in args.batches.split(",")]
    if args.engine == "vllm":
        from ..plugin.settings import ADDITIONAL_CONFIG_KEY, STEPS_PER_SCHEDULE_KEY
        from .vllm_engine import VLLMBench

        # one denoising step per engine step: the counted engine step is one step of the batch
        config = {ADDITIONAL_CONFIG_KEY: {STEPS_PER_SCHEDULE_KEY: 1}}
        bench = VLLMBench(
            args.model, max(batches), len(prompt) + args.gen_length, additional_config=config
        )

        def count(settings, batch):
            return count_engine_step(bench, prompt, settings, batch)
    else:

        def count(settings, batch):
            return count_core_step(model, prompt, settings, batch, args.by_site)

    report = {"command": " ".join(sys.argv), "engine": args.engine, "methods": {}}
    for method in args.methods.split(","):
        settings = DecodeSettings(
            method=method, gen_length=args.gen_length, refresh_mode=args.refresh_mode
        )
        rows = [count(settings, r) for r in batches]
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
