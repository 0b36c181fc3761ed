"""Every GPU-side check in one call (CUDA + PyTorch, no vLLM needed), results in one JSON file.

  python benchmarks/gpu_check.py --out OUT_DIR            # on a GPU machine, at most ~8 minutes
  python benchmarks/gpu_check.py --out OUT_DIR --smoke    # tiny shapes on the CPU (run by the tests)

1. builds the extension in place (``setup.py build_ext --inplace``: the CUDA kernel with the
   machine's nvcc) unless ``vllm_elastic._C`` already has a CUDA kernel, when not --smoke;
2. the tests marked ``gpu`` (pytest -m gpu), among them the CUDA kernels' parity tests;
3. ``elastic_attention``: the compiled op against the torch twin at LLaDA-8B heads (H = 32, dh = 128,
   bf16), n = 1024 and 4096, 48 query rows (16 window, 1 tracked with drift): time and peak memory;
4. ``elastic_attention_varlen``: the compiled op against its twin at LLaDA-8B heads in bf16, a batch of
   R = 1, 8, 32 sequences of n = 1024 keys with 20 computed rows each (16 window, 1 tracked);
5. ``step``: one batched ``core.generate.step`` of R = 1, 8, 32 elastic sequences on the random
   LLaDA-8B of 6, with the op and with the twin (ms per step over the steps after the first two);
6. the core decoders on a random LLaDA built from the LLaDA-8B config.json in bf16: tokens/s of llada,
   fastdllm and elastic at gen_length 256 and 512, batch 1 and 8. Random weights give flat confidences,
   so every method commits a fixed TOKENS_PER_STEP tokens per step (llada: steps = gen / TOKENS_PER_STEP;
   fastdllm/elastic: tokens_per_step), which keeps the caches exercised and the NFE equal across methods.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm_elastic.core.config import LLaDAConfig, llada_8b_config  # noqa: E402
from vllm_elastic.core.generate import generate  # noqa: E402
from vllm_elastic.core.model import LLaDAModel  # noqa: E402
from vllm_elastic.core.settings import DecodeSettings  # noqa: E402

TOKENS_PER_STEP = 4
STEP_LAYERS = 6  # layers of the random LLaDA-8B whose batched step is timed
METHODS = ("llada", "fastdllm", "elastic")


def build_model(smoke: bool, device: str, n_layers: int | None = None) -> LLaDAModel:
    if smoke:
        cfg = LLaDAConfig(d_model=128, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
                          vocab_size=256, embedding_size=256, mask_token_id=255, eos_token_id=254,
                          pad_token_id=254, max_sequence_length=1024)
        dtype = torch.float32
    else:
        cfg, dtype = llada_8b_config(), torch.bfloat16
    if n_layers is not None:
        cfg = dataclasses.replace(cfg, n_layers=n_layers)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LLaDAModel(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def settings_for(method: str, gen: int) -> DecodeSettings:
    if method == "llada":
        return DecodeSettings(method=method, gen_length=gen, steps=gen // TOKENS_PER_STEP)
    return DecodeSettings(method=method, gen_length=gen, tokens_per_step=TOKENS_PER_STEP)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def decode_rows(model, device, gens, batches, budget_s, start) -> list[dict]:
    rng = random.Random(0)
    vocab = model.config.eos_token_id  # prompt ids below EOS and the mask id
    rows = []
    generate(model, [[1, 2, 3]], settings_for("elastic", 32))  # warm-up
    for gen in gens:
        for batch in batches:
            prompts = [[rng.randrange(vocab) for _ in range(rng.randint(48, 80))] for _ in range(batch)]
            for method in METHODS:
                if time.perf_counter() - start > budget_s:
                    rows.append({"method": method, "gen_length": gen, "batch": batch,
                                 "skipped": "time budget"})
                    continue
                sync(device)
                t0 = time.perf_counter()
                out = generate(model, prompts, settings_for(method, gen))
                sync(device)
                wall = time.perf_counter() - t0
                rows.append({
                    "method": method, "gen_length": gen, "batch": batch, "wall_s": wall,
                    "canvas_tokens_per_s": batch * gen / wall,
                    "nfe_mean": sum(r.stats.nfe for r in out) / batch,
                    "layer_token_fraction": sum(r.stats.rows_computed for r in out)
                    / sum(r.stats.rows_nocache for r in out),
                })
                print(json.dumps(rows[-1]), flush=True)
    return rows


def build_extension(budget_s: float) -> dict:
    """Compile vllm_elastic._C here (CUDA + CPU kernels), unless it already has the CUDA kernel."""
    check = [sys.executable, "-c", "import torch, vllm_elastic.ops as o; assert o.HAS_CUDA_KERNEL"]
    if subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0:
        return {"built": "already"}
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"cmd": " ".join(cmd), "rc": None, "tail": "timed out"}
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "build_s": time.perf_counter() - t0,
            "tail": (proc.stdout + proc.stderr)[-1500:]}


def op_inputs(heads: tuple[int, int, int], n: int, device: str, dtype) -> list:
    """One layer step of a sequence of n keys in shuffled 16-slot blocks (the spec's argument order)."""
    h, hkv, dh = heads
    bs, rows_, window, tracked = 16, 48, 16, 1
    nblk = -(-n // bs)
    opts = {"device": device, "dtype": dtype}
    page = torch.randn(nblk + 4, hkv, 2 * bs, dh, **opts)  # vLLM's CPU page: K half, V half
    return [torch.randn(rows_, h, dh, **opts), torch.randn(rows_, hkv, dh, **opts),
            torch.randn(rows_, hkv, dh, **opts), torch.randperm(n, device=device)[:rows_],
            page[:, :, :bs], page[:, :, bs:], torch.randperm(nblk + 4, device=device)[:nblk], n,
            torch.arange(window, device=device), torch.tensor([window], device=device),
            torch.randn(tracked, h, dh, **opts), True]


def op_rows(smoke: bool, device: str, repeats: int = 5) -> list[dict]:
    """The compiled op against the torch twin (forced through ops' env switch), same inputs."""
    import os

    from vllm_elastic import ops

    heads, ns, dtype = ((4, 4, 64), (128, 256), torch.float32) if smoke else (
        (32, 32, 128), (1024, 4096), torch.bfloat16)
    rows = []
    for n in ns:
        args = op_inputs(heads, n, device, dtype)
        row = {"heads": heads, "n": n, "dtype": str(dtype), "kernel": ops.kernel_for(torch.device(device))}
        for impl, env in (("op", ""), ("torch", "torch")):
            os.environ[ops.BACKEND_ENV] = env
            ops.elastic_attention(*args)  # warm-up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                ops.elastic_attention(*args)
                sync(device)
                times.append(time.perf_counter() - t0)
            row[f"{impl}_ms"] = sorted(times)[len(times) // 2] * 1e3
            if device == "cuda":
                row[f"{impl}_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        os.environ.pop(ops.BACKEND_ENV, None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


VARLEN_ROWS, VARLEN_W = 20, 16


def varlen_inputs(heads: tuple[int, int, int], num_seqs: int, n: int, device: str, dtype) -> list:
    """A batch of layer steps of n keys each in one pool of shuffled 16-slot blocks (the twin's
    argument order): VARLEN_ROWS rows per sequence, VARLEN_W window rows, one tracked row."""
    h, hkv, dh = heads
    bs, nblk = 16, -(-n // 16)
    opts = {"device": device, "dtype": dtype}
    page = torch.randn(num_seqs * nblk + 4, hkv, 2 * bs, dh, **opts)  # K half, V half
    rows = num_seqs * VARLEN_ROWS
    seq = torch.arange(num_seqs, device=device)
    base = seq[:, None] * VARLEN_ROWS  # [R, 1]
    return [torch.randn(rows, h, dh, **opts), torch.randn(rows, hkv, dh, **opts),
            torch.randn(rows, hkv, dh, **opts), seq.repeat_interleave(VARLEN_ROWS),
            torch.cat([torch.randperm(n, device=device)[:VARLEN_ROWS] for _ in range(num_seqs)]),
            torch.arange(num_seqs + 1, device=device) * VARLEN_ROWS, VARLEN_ROWS,
            page[:, :, :bs], page[:, :, bs:],
            torch.randperm(page.shape[0], device=device)[: num_seqs * nblk].view(num_seqs, nblk),
            torch.full((num_seqs,), n, device=device), n,
            torch.ones(num_seqs, dtype=torch.bool, device=device),
            base + torch.arange(VARLEN_W, device=device), base + VARLEN_W,
            torch.randn(num_seqs, 1, h, dh, **opts)]


def timed(fn, device: str, repeats: int) -> float:
    """Median ms of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def varlen_rows(smoke: bool, device: str, repeats: int = 5) -> list[dict]:
    """elastic_attention_varlen: the compiled op against its twin (ops' env switch), same inputs."""
    import os

    from vllm_elastic import ops

    heads, n, seqs, dtype = ((4, 4, 64), 128, (1, 2), torch.float32) if smoke else (
        (32, 32, 128), 1024, (1, 8, 32), torch.bfloat16)
    rows = []
    for num_seqs in seqs:
        args = varlen_inputs(heads, num_seqs, n, device, dtype)
        row = {"heads": heads, "n": n, "R": num_seqs, "dtype": str(dtype),
               "kernel": ops.kernel_for(torch.device(device))}
        for impl, env in (("op", ""), ("torch", "torch")):
            os.environ[ops.BACKEND_ENV] = env
            call = lambda a=args: ops.elastic_attention_varlen(*a)  # noqa: E731
            row[f"{impl}_ms"] = timed(call, device, repeats)
        os.environ.pop(ops.BACKEND_ENV, None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def step_rows(model, device: str, batches, gen: int, steps: int = 4) -> list[dict]:
    """ms per batched ``core.generate.step`` of elastic sequences, with the op and with the twin:
    two steps first (the first is a full forward), then ``steps`` timed ones."""
    import os

    from vllm_elastic import ops
    from vllm_elastic.core.generate import new_state, step
    from vllm_elastic.core.kv_pool import KVPool

    rng = random.Random(1)
    vocab = model.config.eos_token_id
    rows = []
    for batch in batches:
        prompts = [[rng.randrange(vocab) for _ in range(64)] for _ in range(batch)]
        row = {"R": batch, "gen_length": gen, "layers": model.num_layers}
        for impl, env in (("op", ""), ("torch", "torch")):
            os.environ[ops.BACKEND_ENV] = env
            pool = KVPool.for_model(model)
            states = [new_state(model, p, settings_for("elastic", gen), pool=pool) for p in prompts]
            for _ in range(2):
                step(model, states)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(model, states)
            sync(device)
            row[f"{impl}_ms_per_step"] = (time.perf_counter() - t0) / steps * 1e3
            del states, pool
        os.environ.pop(ops.BACKEND_ENV, None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run_gpu_tests(budget_s: float) -> dict:
    dirs = [d for d in ("tests/core", "tests/kernels") if (ROOT / d).exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", *dirs]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"cmd": " ".join(cmd), "rc": None, "tail": "timed out"}
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "tail": proc.stdout[-2000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new runs after this")
    args = p.parse_args()
    start = time.perf_counter()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if not args.smoke and device != "cuda":
        print("no CUDA device: use --smoke on the CPU", file=sys.stderr)
        return 2
    report = {
        "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "tokens_per_step": TOKENS_PER_STEP,
    }
    if not args.smoke:
        report["build"] = build_extension(min(240.0, args.budget_s / 2))
        from vllm_elastic import ops

        ops.reload_extension()  # this process imported ops before the build
        report["gpu_tests"] = run_gpu_tests(min(120.0, args.budget_s / 3))
    report["elastic_attention"] = op_rows(args.smoke, device)
    report["elastic_attention_varlen"] = varlen_rows(args.smoke, device)
    # the step at the LLaDA-8B shape on 6 of its 32 layers: the per-layer cost is what the op
    # changes, and 6 layers keep 32 sequences' caches and both backends within the time budget
    layers = None if args.smoke else STEP_LAYERS
    small = build_model(args.smoke, device, layers)
    report["step"] = step_rows(small, device, (1, 2) if args.smoke else (1, 8, 32),
                               32 if args.smoke else 256)
    del small
    model = build_model(args.smoke, device)
    gens, batches = ((32, 64), (1, 2)) if args.smoke else ((256, 512), (1, 8))
    report["decode"] = decode_rows(model, device, gens, batches, args.budget_s, start)
    report["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'gpu_check.json'} in {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
