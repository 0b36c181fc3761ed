"""Engine efficiency: how close the plugin runs to plain packed compute, beside stock vLLM (AR).

  python -m vllm_elastic.bench.efficiency models/llada-tiny --methods elastic,fastdllm \
      --concurrency 1,16 --num-prompts 32 --gen-length 256 --json efficiency.json
  python -m vllm_elastic.bench.efficiency models/llada-tiny --random-shape 512,8,8,1408 ...

For each method and concurrency C, the layer-rows per second the plugin computes (the runner's own
per-request ``rows_computed`` summed over a run of the held-out prompts with C in flight, a new
one added as soon as one finishes (``in_flight``), over the run's wall time) divided by the
layer-rows per second of one bare no-cache forward of the same model at batch C on canvases of
the same length, timed after the engine runs inside the engine's own worker process. 1.0: the engine runs at the speed of plain packed compute; the gap is the
engine's overhead (host work, syncs, padding, per-request loops).

The bare forward runs in the worker because that is where the engine's compute runs, with the
threads and cores vLLM gave it: on the CPU, vLLM binds the worker's OpenMP threads to all cores but
one per worker, which it reserves for the engine's other processes (``VLLM_CPU_NUM_OF_RESERVED_CPU``
changes that). On two cores the worker computes on one; a bare forward timed in the bench's own
process would use both and halve every ratio. Each row reports both processes' thread counts.

``--random-shape D,LAYERS,HEADS,MLP``: the same runs on a LLaDA of that shape with random weights
and the model's tokenizer (written to a temporary folder). Its answers mean nothing, but its
steps are the engine's work at a width where a row's projections weigh more against its attention
and bookkeeping than in the tiny model.

``--ar-reference``: stock vLLM serving an autoregressive Llama of the same shape (random weights,
written with transformers into a temporary folder) at the same concurrencies and output lengths, as
a reference line for tokens/s (a diffusion decoder computes many rows per committed token; an AR
model one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

from ..tasks import load_jsonl
from ..tasks.prompting import encode_prompt
from .vllm_engine import DEFAULT_CPU_KV_GIB, VLLMBench


def engine_rows(
    model_dir: str, prompts, methods, concurrencies, gen_length: int, bare_length: int,
    steps_per_schedule: int | None = None,
) -> tuple[list[dict], dict]:
    """Layer-rows and tokens of the plugin per method and concurrency, then the bare forward's
    layer-rows per second at each concurrency, timed in the engine's worker."""
    from vllm import SamplingParams

    from ..plugin.settings import ADDITIONAL_CONFIG_KEY, STEPS_PER_SCHEDULE_KEY
    from ..plugin.stats import request_stats

    canvas = max(map(len, prompts)) + gen_length  # a step's budget fits every in-flight canvas
    extra = {}
    if steps_per_schedule is not None:
        extra[STEPS_PER_SCHEDULE_KEY] = steps_per_schedule
    llm = VLLMBench(
        model_dir, max(concurrencies), canvas, additional_config={ADDITIONAL_CONFIG_KEY: extra}
    ).llm
    rows = []
    for method in methods:
        params = SamplingParams(  # greedy, as the reference decoders (vLLM's default is 1.0)
            max_tokens=gen_length, temperature=0.0, extra_args={"method": method}
        )
        llm.generate([{"prompt_token_ids": p} for p in prompts[:2]], params, use_tqdm=False)
        for c in concurrencies:
            start = time.perf_counter()
            outs = in_flight(llm, prompts, params, c)
            wall = time.perf_counter() - start
            stats = request_stats(llm, outs)
            rows.append({
                "method": method, "concurrency": c, "wall_s": wall,
                "layer_rows": sum(s["rows_computed"] for s in stats if s),
                "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
            })
    (bare, *_) = llm.collective_rpc("elastic_bare_rows_per_s", args=(concurrencies, bare_length))
    del llm
    return rows, bare


def in_flight(llm, prompts, params, concurrency: int) -> list:
    """Every prompt through ``llm``'s engine with ``concurrency`` requests in flight: a new one is
    added as soon as one finishes (the load of vLLM's serving benchmark at ``--max-concurrency``,
    not waves that wait for their slowest request). Finished outputs in prompt order."""
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    params = params.clone()
    params.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate: the answers, not a stream
    done, queue = {}, iter(enumerate(prompts))

    def add_next() -> None:
        for i, prompt in queue:
            engine.add_request(str(i), {"prompt_token_ids": prompt}, params)
            return

    for _ in range(concurrency):
        add_next()
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = out
                add_next()
    return [done[i] for i in range(len(prompts))]


def ar_reference(model_cfg, concurrencies, num_prompts: int, gen_length: int, prompt_len: int):
    """Tokens/s of stock vLLM on a random Llama of the same shape (no plugin runner: not LLaDA)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from vllm import LLM, SamplingParams

    cfg = LlamaConfig(
        hidden_size=model_cfg.d_model, num_attention_heads=model_cfg.n_heads,
        num_key_value_heads=model_cfg.n_kv_heads, num_hidden_layers=model_cfg.n_layers,
        intermediate_size=model_cfg.mlp_hidden_size, vocab_size=model_cfg.vocab_size,
        max_position_embeddings=model_cfg.max_sequence_length, torch_dtype="float32",
    )
    out = []
    with tempfile.TemporaryDirectory() as folder:
        LlamaForCausalLM(cfg).save_pretrained(folder)
        llm = LLM(model=folder, dtype="float32", enforce_eager=True, skip_tokenizer_init=True,
                  max_num_seqs=max(concurrencies))
        params = SamplingParams(max_tokens=gen_length, ignore_eos=True, temperature=0)
        prompt = {"prompt_token_ids": list(range(3, 3 + prompt_len))}
        for c in concurrencies:
            start, tokens = time.perf_counter(), 0
            for lo in range(0, num_prompts, c):
                outs = llm.generate([prompt] * min(c, num_prompts - lo), params, use_tqdm=False)
                tokens += sum(len(o.outputs[0].token_ids) for o in outs)
            wall = time.perf_counter() - start
            out.append({"method": "ar-llama (stock vLLM)", "concurrency": c,
                        "tokens_per_s": tokens / wall})
        del llm
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--methods", default="elastic,fastdllm")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--data", default="data/arith_test.jsonl")
    ap.add_argument("--ar-reference", action="store_true")
    ap.add_argument(
        "--steps-per-schedule", type=int, default=None,
        help="the engine's steps_per_schedule (denoising steps per engine step; default: the "
        "plugin's)",
    )  # fmt: skip
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--random-shape", default=None, metavar="D,LAYERS,HEADS,MLP",
        help="bench a LLaDA of this shape with random weights and the model's tokenizer instead",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not args.random_shape:
        run(args, args.model)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        run(args, write_random_model(args.model, args.random_shape, folder))
    return 0


def write_random_model(model_dir: str, shape: str, folder: str) -> str:
    """A LLaDA of ``shape`` (d_model, n_layers, n_heads, mlp_hidden_size) with random weights and
    ``model_dir``'s tokenizer and vocabulary, written to ``folder``: the engine's efficiency at a
    wider model, where a row's projections cost more against its attention and bookkeeping."""
    import shutil
    from dataclasses import replace
    from pathlib import Path

    from ..core.checkpoint import save_model
    from ..core.config import LLaDAConfig
    from ..core.model import LLaDAModel

    d, layers, heads, mlp = (int(x) for x in shape.split(","))
    base = LLaDAConfig.from_file(model_dir)
    cfg = replace(base, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=heads,
                  mlp_hidden_size=mlp)  # fmt: skip
    torch.manual_seed(0)
    save_model(LLaDAModel(cfg), folder)
    for f in Path(model_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, folder)
    return folder


def run(args: argparse.Namespace, model_dir: str) -> None:
    from transformers import AutoTokenizer

    from ..core.config import LLaDAConfig
    from ..plugin.hf_config import register_hf_config

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KV_GIB)
    # the weights load in the engine's worker only (its runs and the bare forward): here the
    # prompts need the tokenizer and the reference line the shape
    register_hf_config()  # AutoTokenizer reads config.json: without it, transformers warns
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = LLaDAConfig.from_file(model_dir)
    problems = load_jsonl(args.data)[: args.num_prompts]
    prompts = [encode_prompt(tokenizer, p["prompt"]) for p in problems]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    length = round(sum(map(len, prompts)) / len(prompts)) + args.gen_length
    rows, bare = engine_rows(model_dir, prompts, args.methods.split(","), concurrencies,
                             args.gen_length, length, args.steps_per_schedule)  # fmt: skip
    for r in rows:
        r["rows_per_s"] = r["layer_rows"] / r["wall_s"]
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        r["bare_rows_per_s"] = bare["rows_per_s"][r["concurrency"]]
        r["efficiency"] = r["rows_per_s"] / r["bare_rows_per_s"]
        r["worker_threads"] = bare["threads"]
        r["bench_threads"] = torch.get_num_threads()
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    if args.ar_reference:
        plen = round(sum(map(len, prompts)) / len(prompts))
        for r in ar_reference(config, concurrencies, len(prompts), args.gen_length, plen):
            rows.append(r)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
