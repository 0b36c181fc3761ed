"""Run several methods on the same held-out prompts in one process and print one table.

  python -m vllm_elastic.bench --engine reference --methods llada,fastdllm,elastic \
      --gen-length 256 --num-prompts 32 --task arith --json out.json
  python -m vllm_elastic.bench --engine vllm --methods llada,fastdllm,elastic \
      --gen-length 256 --num-prompts 32 --concurrency 1,4,16 --task arith --json out.json
  python -m vllm_elastic.bench --engine server --url http://127.0.0.1:8000 \
      --methods llada,fastdllm,elastic --gen-length 256 --concurrency 1,4,16,32 --json out.json

One row per (method, concurrency). ``reference``: the core decoders, ``concurrency`` sequences
decoded together. ``vllm``: one ``vllm.LLM`` with the plugin, at most ``concurrency`` requests in
flight, methods per request (``bench/vllm_engine.py``); NFE and layer-row fraction from the
plugin's per-request stats. ``server``: a running OpenAI server (``--url``) under ``concurrency``
streaming clients, with TTFT and latency percentiles (``bench/server_engine.py``). Prompts and
outputs are encoded and decoded the same way for all three.

JSON schema: {"runs": [{"engine", "method", "gen_length", "num_prompts", "concurrency", "accuracy",
"output_tokens", "wall_s", "tokens_per_s", "speedup", "nfe_mean", "layer_token_fraction",
"refreshes_per_layer", "refresh_wait_steps", "drift_fires_per_layer",
"drift_similarity_mean_per_layer", "drift_similarity_min_per_layer", "settings", "outputs"}, ...],
"machine", "date", "command"}; ``server`` rows add "requests", "requests_per_s", "ttft_p50_s",
"ttft_p99_s", "latency_p50_s", "latency_p99_s" and per-request "ttft_s", "latency_s",
"finish_reasons" (see ``bench/server_engine.py``). ``refresh_wait_steps``: steps deferred
refreshes waited for the scheduler's grant
(summed over prompts; ``--refresh-budget`` limits the grants per step, vllm engine only).
``drift_fires_per_layer``: the drift tests that fired at each layer (with a refresh from layer 0,
``refreshes_per_layer`` is the same at every layer and does not show them).
``drift_similarity_mean_per_layer`` / ``_min_``: the drift tests' similarity at each layer over
every step and prompt (null: no test ran there); a gamma above them fires (reference and vllm
engines).
Output tokens count up to, not including, the first EOS.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from ..eval.cli import add_decoder_args, settings_from_args
from ..eval.runner import load, run_problems
from ..tasks import load_jsonl

TASK_FILES = {"arith": "data/arith_test.jsonl", "code": "data/code_test.jsonl"}
ENGINES = ("reference", "vllm", "server")
PROMPT_ROOM = 768  # tokens: above every held-out prompt, chat format (at most 527: story_1024)


def make_runner(args, concurrencies: list[int]):
    """run(problems, settings, concurrency, chat, desc) -> RunResult on the chosen engine."""
    if args.engine == "vllm":
        from .vllm_engine import VLLMBench  # imports vllm

        kwargs = _parallel(args)
        if args.refresh_budget is not None:
            kwargs["additional_config"] = {"elastic": {"refresh_budget": args.refresh_budget}}
        canvas = args.gen_length + PROMPT_ROOM
        return VLLMBench(args.model, max(concurrencies), canvas, **kwargs).run
    model, tokenizer = load(args.model)

    def run(problems, settings, concurrency, chat, desc):
        return run_problems(model, tokenizer, problems, settings, concurrency, chat, desc=desc)

    return run


def _parallel(args) -> dict:
    """Engine kwargs of ``--tensor-parallel-size``: vLLM's mp executor (gloo on the CPU)."""
    if args.tensor_parallel_size == 1:
        return {}
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # one NUMA node: no binding
    return {"tensor_parallel_size": args.tensor_parallel_size, "distributed_executor_backend": "mp"}


def task_label(args, problems: list[dict]) -> str:
    """The family the rows were scored as: ``--task``, or the ``task`` of ``--data``'s rows."""
    tasks = sorted({str(p.get("task", args.task)) for p in problems}) if args.data else [args.task]
    return ",".join(tasks)


def run_row(engine, method, concurrency, args, run, problems) -> dict:
    settings = settings_from_args(args, method, args.gen_length)
    res = run(problems, settings, concurrency, not args.raw_prompt, f"{method}@{args.gen_length}")
    return {
        "engine": engine, "method": method, "gen_length": args.gen_length,
        "num_prompts": len(problems), "concurrency": concurrency,
        "task": task_label(args, problems),
        "accuracy": res.accuracy, "output_tokens": res.output_tokens, "wall_s": res.wall_s,
        "tokens_per_s": res.output_tokens / res.wall_s if res.wall_s else 0.0,
        "nfe_mean": sum(res.nfe) / max(1, len(res.nfe)),
        "layer_token_fraction": res.layer_token_fraction,
        "refreshes_per_layer": res.refreshes_per_layer,
        "refresh_wait_steps": res.refresh_wait_steps,
        "drift_fires_per_layer": res.drift_fires,
        "drift_similarity_mean_per_layer": res.drift_mean,
        "drift_similarity_min_per_layer": res.drift_min,
        "settings": dataclasses.asdict(settings), "outputs": res.outputs,
    }


def server_rows(args, methods, concurrencies, problems, parser) -> list[dict]:
    """``--engine server``: rows against the running server at ``--url``, method-major."""
    from . import server_engine

    try:
        bench = server_engine.ServerBench(args.url, args.model, args.requests)
    except ConnectionError as err:
        parser.error(str(err))
    chat = not args.raw_prompt
    runs = [
        {**bench.row(problems, settings_from_args(args, m, args.gen_length), c, chat),
         "task": task_label(args, problems)}
        for m in methods
        for c in concurrencies
    ]
    server_engine.print_table(runs)
    return runs


def _setup(r: dict) -> tuple:
    """Rows that share a llada baseline for ``speedup``: same engine, gen length, concurrency."""
    return r["engine"], r["gen_length"], r["concurrency"]


def print_table(runs: list[dict]) -> None:
    base = {_setup(r): r["tokens_per_s"] for r in runs if r["method"] == "llada"}
    head = f"{'engine':<10} {'method':<9} {'gen':>5} {'conc':>5} {'acc':>6} {'out_tok':>8} "
    head += f"{'wall_s':>8} {'tok/s':>8} {'speedup':>8} {'NFE':>7} {'layer-row':>9} {'waits':>6}"
    print(head)
    for r in runs:
        ref = base.get(_setup(r))
        r["speedup"] = r["tokens_per_s"] / ref if ref else None
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        print(f"{r['engine']:<10} {r['method']:<9} {r['gen_length']:>5} {r['concurrency']:>5} "
              f"{r['accuracy']:>6.3f} {r['output_tokens']:>8} {r['wall_s']:>8.1f} "
              f"{r['tokens_per_s']:>8.2f} {speed:>8} "
              f"{r['nfe_mean']:>7.1f} {r['layer_token_fraction']:>9.3f} "
              f"{r['refresh_wait_steps']:>6}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engine", default="reference", choices=ENGINES)
    p.add_argument("--methods", default="llada,fastdllm,elastic")
    p.add_argument("--model", default="models/llada-tiny")
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--task", default="arith", choices=sorted(TASK_FILES))
    p.add_argument("--data", default=None, help="a jsonl of problems instead of the task's file")
    p.add_argument("--concurrency", default="1",
                   help="sequences decoded together (vllm: requests in flight); a list: 1,4,16")
    p.add_argument("--raw-prompt", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="--engine vllm only")
    p.add_argument("--url", default=None, help="--engine server: the server, http://HOST:PORT")
    p.add_argument("--requests", type=int, default=None,
                   help="--engine server: requests per row (default max(2*concurrency, 8))")
    p.add_argument("--refresh-budget", type=int, default=None,
                   help="--engine vllm only: token rows of deferred refresh granted per step "
                        "(additional_config refresh_budget; default: the step's unused token budget)")
    add_decoder_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
        if args.tensor_parallel_size != 1 and args.engine != "vllm":
            raise ValueError("--tensor-parallel-size needs --engine vllm")
        if (args.engine == "server") != (args.url is not None):
            raise ValueError("--url goes with --engine server, and --engine server needs --url")
        if args.requests is not None and args.requests <= 0:
            raise ValueError(f"--requests must be positive, got {args.requests}")
        if args.refresh_budget is not None and args.engine != "vllm":
            raise ValueError("--refresh-budget needs --engine vllm")
        if args.refresh_budget is not None and args.refresh_budget < 1:
            raise ValueError(f"--refresh-budget must be >= 1, got {args.refresh_budget}")
        if not concurrencies or min(concurrencies) <= 0:
            raise ValueError(f"--concurrency must be positive integers, got {args.concurrency!r}")
        for m in methods:
            settings_from_args(args, m, args.gen_length)
        problems = load_jsonl(args.data or TASK_FILES[args.task])[: args.num_prompts]
        if args.json:  # before the runs, not after them: a bad path must not cost a whole bench
            _check_writable(Path(args.json))
    except ValueError as err:
        p.error(str(err))
    if args.engine == "server":
        runs = server_rows(args, methods, concurrencies, problems, p)
    else:
        run = make_runner(args, concurrencies)
        tp = args.tensor_parallel_size
        engine = args.engine if tp == 1 else f"{args.engine}-tp{tp}"
        runs = [run_row(engine, m, c, args, run, problems) for c in concurrencies for m in methods]
        print_table(runs)
    if args.json:
        meta = {
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "command": "python -m vllm_elastic.bench " + " ".join(argv if argv else sys.argv[1:]),
        }
        Path(args.json).write_text(json.dumps({"runs": runs, **meta}, indent=2))
    return 0


def _check_writable(path: Path) -> None:
    """Create the JSON file's folder; ValueError when it cannot be written there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as err:
        raise ValueError(f"--json {path}: {err.strerror}") from err


if __name__ == "__main__":
    sys.exit(main())
