"""The compiled elastic_attention op against its torch twin on the CPU: time and peak memory.

    python benchmarks/bench_attention_op.py [--repeats 7] [--ns 1024 4096]
    python benchmarks/bench_attention_op.py --varlen [--repeats 5] [--ns 256 1024] [--seqs 1 4 16] \
        [--rows 20]

--varlen times elastic_attention_varlen against elastic_attention_varlen_ref instead (time only):
a batch of R sequences of n keys each, --rows computed rows per sequence (20) of which W are
window rows (all but 4) and 1 tracked (with prev_q), every sequence reading its paged cache
(see varlen_inputs). VLLM_ELASTIC_CPU_PATH=loops times the CPU kernel's loop path instead of its
GEMM path. --sdpa adds the floor of plain attention: torch's scaled_dot_product_attention of the
same query rows over n contiguous keys per sequence (no pages, no statistics), and its time per
query row beside that of whole canvases (n query rows per sequence, as a no-cache forward).

One Elastic-Cache layer step: T = 48 query rows, W = 16 window rows, R = 1 tracked row with prev_q
(head-mode drift), K/V in paged caches (block size 32, shuffled blocks, the two halves of one
[nb, Hkv, 2 * bs, dh] page as vLLM's CPU layout), float32, at LLaDA-tiny heads (H = Hkv = 4,
dh = 64) and LLaDA-8B heads (H = Hkv = 32, dh = 128).

time: median wall time of one call over --repeats calls (op and twin alternate, after a warm-up).
peak memory: in a fresh subprocess per variant, the rise of the resident set's high-water mark
(VmHWM, reset through /proc/self/clear_refs) above the resident set before one call, after a
warm-up call on small inputs (one-time library and thread start-up excluded). glibc's mmap
threshold is fixed at 64 KiB so that large freed blocks leave the process instead of being reused
unseen. It counts everything the call makes resident: outputs, gathered K/V, probabilities, buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vllm_elastic._C  # noqa: F401  (registers torch.ops.vllm_elastic.*)

from vllm_elastic.core.elastic_attention import elastic_attention_ref, elastic_attention_varlen_ref

SHAPES = {"tiny": (4, 4, 64), "8b": (32, 32, 128)}  # H, Hkv, dh
T, W, R, BLOCK = 48, 16, 1, 32
IMPLS = {"op": torch.ops.vllm_elastic.elastic_attention, "torch": elastic_attention_ref}


def make_inputs(shape: str, n: int) -> dict:
    H, Hkv, dh = SHAPES[shape]
    nblk = -(-n // BLOCK)
    num_blocks = nblk + 8
    page = torch.randn(num_blocks, Hkv, 2 * BLOCK, dh)  # [nb, Hkv, 2 * bs, dh]: K half, V half
    rows = torch.randperm(n)[:T]
    return {
        "q": torch.randn(T, H, dh),
        "k_new": torch.randn(T, Hkv, dh),
        "v_new": torch.randn(T, Hkv, dh),
        "rows": rows,
        "key_cache": page[:, :, :BLOCK],
        "value_cache": page[:, :, BLOCK:],
        "block_table": torch.randperm(num_blocks)[:nblk].int(),
        "n": n,
        "window": torch.arange(W),
        "tracked": torch.tensor([W]),
        "prev_q": torch.randn(R, H, dh),
        "cosine_over_heads": True,
    }


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(shape: str, n: int, impl: str) -> None:
    """Runs in the subprocess: prints the rise of VmHWM during one call, in KiB."""
    fn = IMPLS[impl]
    fn(**make_inputs(shape, 64))  # warm-up: threads, library start-up
    args = make_inputs(shape, n)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    out = fn(**args)
    print(json.dumps({"peak_kib": status_kib("VmHWM") - before, "outputs": len(out)}))


def peak_memory(shape: str, n: int, impl: str) -> float:
    """MiB, measured in a fresh subprocess."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", shape, str(n), impl]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


def timings(shape: str, n: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each impl, alternating, after one warm-up call each."""
    args = make_inputs(shape, n)
    ref = elastic_attention_ref(**args)
    got = IMPLS["op"](**args)
    for g, r in zip(got, ref):  # the numbers below are for equal results
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    times: dict[str, list[float]] = {name: [] for name in IMPLS}
    for _ in range(repeats):
        for name, fn in IMPLS.items():
            start = time.perf_counter()
            fn(**args)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


VARLEN_ROWS, VARLEN_K = 20, 1  # rows per sequence (--rows), tracked rows
VARLEN_NOT_WINDOW = 4  # rows of a sequence outside its window (the last one tracked)


def window_rows(rows: int) -> int:
    return rows - VARLEN_NOT_WINDOW if rows > VARLEN_NOT_WINDOW else rows - VARLEN_K


def varlen_inputs(shape: str, num_seqs: int, n: int, rows: int = VARLEN_ROWS) -> dict:
    """A batch of num_seqs Elastic-Cache layer steps of n keys, in one pool of shuffled pages."""
    H, Hkv, dh = SHAPES[shape]
    w = window_rows(rows)
    nblk = -(-n // BLOCK)
    num_blocks = num_seqs * nblk + 8
    page = torch.randn(num_blocks, Hkv, 2 * BLOCK, dh)  # [nb, Hkv, 2 * bs, dh]: K half, V half
    T = num_seqs * rows
    seq = torch.arange(num_seqs).repeat_interleave(rows)  # [T]
    base = torch.arange(num_seqs)[:, None] * rows  # [R, 1]
    return {
        "q": torch.randn(T, H, dh),
        "k_new": torch.randn(T, Hkv, dh),
        "v_new": torch.randn(T, Hkv, dh),
        "row_seq": seq,
        "row_pos": torch.cat([torch.randperm(n)[:rows] for _ in range(num_seqs)]),
        "cu_rows": torch.arange(num_seqs + 1) * rows,
        "max_rows": rows,
        "key_cache": page[:, :, :BLOCK],
        "value_cache": page[:, :, BLOCK:],
        "block_tables": torch.randperm(num_blocks)[: num_seqs * nblk].view(num_seqs, nblk),
        "seq_lens": torch.full((num_seqs,), n),
        "max_len": n,
        "reads_cache": torch.ones(num_seqs, dtype=torch.bool),
        "window": base + torch.arange(w),  # [R, W]
        "tracked": base + w,  # [R, 1]
        "prev_q": torch.randn(num_seqs, VARLEN_K, H, dh),
    }


def varlen_timings(
    shape: str, num_seqs: int, n: int, repeats: int, rows: int = VARLEN_ROWS, sdpa: bool = False
) -> dict[str, float]:
    """Median seconds per call of the varlen op and its twin (and with ``sdpa`` plain attention
    of the same rows and of whole canvases), alternating, after equal results."""
    args = varlen_inputs(shape, num_seqs, n, rows)
    impls = {
        "op": lambda: torch.ops.vllm_elastic.elastic_attention_varlen(**args),
        "torch": lambda: elastic_attention_varlen_ref(**args),
    }
    for g, r in zip(impls["op"](), impls["torch"]()):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    if sdpa:
        H, Hkv, dh = SHAPES[shape]
        q, whole = torch.randn(num_seqs, H, rows, dh), torch.randn(num_seqs, H, n, dh)
        k, v = torch.randn(num_seqs, Hkv, n, dh), torch.randn(num_seqs, Hkv, n, dh)
        sdpa_fn = torch.nn.functional.scaled_dot_product_attention
        impls["sdpa"] = lambda: sdpa_fn(q, k, v, enable_gqa=H != Hkv)
        impls["sdpa_whole"] = lambda: sdpa_fn(whole, k, v, enable_gqa=H != Hkv)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def varlen_table(ns: list[int], seqs: list[int], repeats: int, rows: int, sdpa: bool) -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"{rows} rows per sequence (W={window_rows(rows)}, K={VARLEN_K}, head and key drift), "
        f"block size {BLOCK}, {repeats} repeats\n"
    )
    extra = " sdpa ms | op us/row | sdpa us/row | whole canvases us/row |" if sdpa else ""
    print("| heads (H, Hkv, dh) | R | n | op ms | torch ms | speed-up |" + extra)
    print("|---|---|---|---|---|---|" + "---|" * 4 * sdpa)
    for shape, heads in SHAPES.items():
        for n in ns:
            for num_seqs in seqs:
                t = varlen_timings(shape, num_seqs, n, repeats, rows, sdpa)
                line = (f"| {shape} {heads} | {num_seqs} | {n} | {t['op'] * 1e3:.2f} | "
                        f"{t['torch'] * 1e3:.2f} | {t['torch'] / t['op']:.2f}x |")  # fmt: skip
                if sdpa:
                    per_row = 1e6 / (num_seqs * rows)
                    line += (f" {t['sdpa'] * 1e3:.2f} | {t['op'] * per_row:.1f} | "
                             f"{t['sdpa'] * per_row:.1f} | "
                             f"{t['sdpa_whole'] * 1e6 / (num_seqs * n):.1f} |")  # fmt: skip
                print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="keys per sequence")
    parser.add_argument("--varlen", action="store_true", help="the batched op (time only)")
    parser.add_argument("--seqs", type=int, nargs="+", default=[1, 4, 16], help="--varlen: R")
    parser.add_argument("--rows", type=int, default=VARLEN_ROWS, help="--varlen: rows per sequence")
    parser.add_argument("--sdpa", action="store_true", help="--varlen: plain attention beside")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        peak_memory_child(a.child[0], int(a.child[1]), a.child[2])
        return
    if a.varlen:
        varlen_table(a.ns or [256, 1024], a.seqs, a.repeats, a.rows, a.sdpa)
        return
    a.ns = a.ns or [1024, 4096]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"T={T} W={W} R={R} (head-mode drift), block size {BLOCK}, {a.repeats} repeats\n"
    )
    print("| heads (H, Hkv, dh) | n | op ms | torch ms | speed-up | op peak MiB | torch peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for shape, heads in SHAPES.items():
        for n in a.ns:
            t = timings(shape, n, a.repeats)
            mem = {name: peak_memory(shape, n, name) for name in IMPLS}
            print(
                f"| {shape} {heads} | {n} | {t['op'] * 1e3:.2f} | {t['torch'] * 1e3:.2f} | "
                f"{t['torch'] / t['op']:.2f}x | {mem['op']:.1f} | {mem['torch']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
