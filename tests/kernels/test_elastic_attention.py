"""The compiled elastic_attention op against its torch twin, on fresh random inputs every run.

The grid covers odd sizes (n not a multiple of the block size, T = 1, W = 0, R = 0, no prev_q),
grouped-query attention, shuffled non-contiguous block tables with NaN in the unused blocks, a
strided cache view (the two halves of a [nb, Hkv, 2 * bs, dh] page), both drift modes and rows that
cover every position (0-block caches: the op must not read them). Before each call the allocator is
filled with NaN-poisoned freed blocks (effective on CUDA's caching allocator; best effort on the
CPU), so an output element the op forgets to write shows up. The seed of each test is printed.

The extension is part of the package: without it the CPU tests fail, unless it was skipped on
purpose with VLLM_ELASTIC_NO_EXT=1.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import pytest
import torch

from vllm_elastic.core.elastic_attention import elastic_attention_ref

NO_EXT = os.environ.get("VLLM_ELASTIC_NO_EXT") == "1"
POISON = float("nan")

# (o, stats) tolerances by dtype. The stats are float32 in both paths, from the same rounded
# inputs; o of a bfloat16 call is rounded to bfloat16 (and the twin's SDPA runs in bfloat16).
TOLERANCES = {
    torch.float32: ({"rtol": 1e-5, "atol": 1e-5}, {"rtol": 1e-4, "atol": 1e-6}),
    torch.bfloat16: ({"rtol": 2e-2, "atol": 2e-2}, {"rtol": 1e-3, "atol": 1e-5}),
}


@dataclass(frozen=True)
class Case:
    """One shape of the grid. n_rows = T; all_rows: rows cover every position (T = n)."""

    name: str
    T: int
    H: int
    Hkv: int
    dh: int
    n: int
    bs: int
    W: int
    R: int
    drift: bool = True
    strided: bool = False
    all_rows: bool = False


CASES = [
    Case("base", T=6, H=4, Hkv=4, dh=64, n=37, bs=16, W=3, R=2),
    Case("gqa_strided_dh80", T=9, H=8, Hkv=2, dh=80, n=100, bs=32, W=4, R=2, strided=True),
    Case("one_row_no_stats", T=1, H=2, Hkv=1, dh=128, n=33, bs=16, W=0, R=0, drift=False),
    Case("no_window", T=5, H=8, Hkv=2, dh=64, n=50, bs=16, W=0, R=1),
    Case("tracked_without_prev_q", T=4, H=4, Hkv=2, dh=64, n=40, bs=16, W=2, R=2, drift=False),
    Case("all_rows", T=20, H=4, Hkv=2, dh=64, n=20, bs=16, W=5, R=0, drift=False, all_rows=True),
    Case("all_rows_drift", T=20, H=4, Hkv=2, dh=64, n=20, bs=16, W=5, R=3, all_rows=True),
    Case("elastic_step", T=48, H=8, Hkv=2, dh=64, n=300, bs=32, W=16, R=1, strided=True),
]


def make_inputs(c: Case, dtype: torch.dtype, device: str) -> dict:
    """Random inputs of one case; the caches hold NaN wherever the op must not read."""
    nblk = -(-c.n // c.bs)
    read_cache = not c.all_rows or c.drift
    num_blocks = nblk + 3 if read_cache else 0  # spare blocks: NaN, never in the table

    def randn(*shape):
        return torch.randn(*shape, device=device).to(dtype)

    if c.strided:
        page = torch.full((num_blocks, c.Hkv, 2 * c.bs, c.dh), POISON, device=device, dtype=dtype)
        key_cache, value_cache = page[:, :, : c.bs], page[:, :, c.bs :]
    else:
        shape = (num_blocks, c.Hkv, c.bs, c.dh)
        key_cache = torch.full(shape, POISON, device=device, dtype=dtype)
        value_cache = torch.full(shape, POISON, device=device, dtype=dtype)
    block_table = torch.randperm(num_blocks, device=device)[: nblk if read_cache else 0]
    block_table = block_table.to(random.choice([torch.int32, torch.int64]))
    rows = torch.randperm(c.n, device=device)[: c.T]
    for cache in (key_cache, value_cache) if read_cache else ():
        pos = torch.arange(c.n, device=device)
        cache[block_table[pos // c.bs].long(), :, pos % c.bs] = randn(c.n, c.Hkv, c.dh)
        if not c.drift:  # the rows' own positions are overridden by k_new / v_new: never read
            cache[block_table[rows // c.bs].long(), :, rows % c.bs] = POISON
    return {
        "q": 2 * randn(c.T, c.H, c.dh),  # x2: peakier softmaxes than unit scores
        "k_new": randn(c.T, c.Hkv, c.dh),
        "v_new": randn(c.T, c.Hkv, c.dh),
        "rows": rows,
        "key_cache": key_cache,
        "value_cache": value_cache,
        "block_table": block_table,
        "n": c.n,
        "window": torch.randperm(c.T, device=device)[: c.W],
        "tracked": torch.randperm(c.T, device=device)[: c.R],
        "prev_q": 2 * randn(c.R, c.H, c.dh) if c.drift else randn(0),
    }


def poison_allocator(device: str, numel: int) -> None:
    """Leave freed NaN blocks behind, so that torch.empty inside the op may return garbage."""
    blocks = [torch.full((size,), POISON, device=device) for size in (numel, 4 * numel, 256)]
    del blocks


def check_parity(c: Case, dtype: torch.dtype, cosine_over_heads: bool, device: str) -> None:
    seed = random.randrange(2**31)
    print(f"case={c.name} dtype={dtype} head_mode={cosine_over_heads} seed={seed}")
    torch.manual_seed(seed)
    random.seed(seed)
    args = make_inputs(c, dtype, device)
    ref = elastic_attention_ref(**args, cosine_over_heads=cosine_over_heads)
    poison_allocator(device, c.T * c.H * c.dh + c.n * (3 * c.R + 1))
    got = torch.ops.vllm_elastic.elastic_attention(**args, cosine_over_heads=cosine_over_heads)
    tol_o, tol_stats = TOLERANCES[dtype]
    for name, g, r, tol in zip(("o", "mass", "drift"), got, ref, (tol_o, tol_stats, tol_stats)):
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, g.shape, r.dtype, r.shape)
        assert torch.isfinite(g).all(), f"{name} has non-finite elements (seed {seed})"
        torch.testing.assert_close(
            g, r, **tol, msg=lambda m, name=name: f"{name}: {m} (seed {seed})"
        )


def require_extension() -> None:
    """Import the extension; fail (not skip) without it unless it was skipped on purpose."""
    if NO_EXT:
        pytest.skip("built with VLLM_ELASTIC_NO_EXT=1: no compiled op to test")
    import vllm_elastic._C  # noqa: F401  (ImportError fails the test: the build lost the op)


GRID = pytest.mark.parametrize("cosine_over_heads", [True, False], ids=["head", "key"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
CASE_IDS = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
# The CPU kernel's two paths (csrc/elastic_attention_cpu_kernels.h): GEMMs per sequence (its
# default) and the loops, picked for every sequence of a call by this variable.
CPU_PATH_ENV = "VLLM_ELASTIC_CPU_PATH"
CPU_PATHS = pytest.mark.parametrize("cpu_path", ["gemm", "loops"])


@CASE_IDS
@DTYPES
@GRID
@CPU_PATHS
def test_cpu_matches_twin(
    monkeypatch, case: Case, dtype: torch.dtype, cosine_over_heads: bool, cpu_path: str
) -> None:
    require_extension()
    monkeypatch.setenv(CPU_PATH_ENV, cpu_path)
    check_parity(case, dtype, cosine_over_heads, "cpu")


@pytest.mark.gpu
@CASE_IDS
@DTYPES
@GRID
def test_cuda_matches_twin(case: Case, dtype: torch.dtype, cosine_over_heads: bool) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA kernel runs from benchmarks/gpu_check.py on a GPU")
    require_extension()
    op = torch.ops.vllm_elastic.elastic_attention.default
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CUDA"), (
        "the extension was built without its CUDA kernel on a CUDA machine"
    )
    check_parity(case, dtype, cosine_over_heads, "cuda")


def test_fp16_matches_fp32_op() -> None:
    """float16 inputs (no twin tolerance table): the op in fp16 against the op in fp32."""
    require_extension()
    torch.manual_seed(random.randrange(2**31))
    args = make_inputs(CASES[1], torch.float32, "cpu")
    half = {
        k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in args.items()
    }
    want = torch.ops.vllm_elastic.elastic_attention(**args, cosine_over_heads=True)
    got = torch.ops.vllm_elastic.elastic_attention(**half, cosine_over_heads=True)
    assert got[0].dtype == torch.float16
    torch.testing.assert_close(got[0].float(), want[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got[1], want[1], rtol=1e-2, atol=1e-3)


def test_meta_shapes() -> None:
    """The Meta kernel (torch.compile's fake tensors) gives the shapes and dtypes of the CPU op."""
    require_extension()
    c = CASES[0]
    args = make_inputs(c, torch.bfloat16, "cpu")
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in args.items()}
    for head_mode, drift_shape in ((True, (3, c.R, c.n)), (False, (2,))):
        o, mass, drift = torch.ops.vllm_elastic.elastic_attention(
            **meta, cosine_over_heads=head_mode
        )
        assert (o.shape, o.dtype) == ((c.T, c.H, c.dh), torch.bfloat16)
        assert (mass.shape, mass.dtype, drift.shape) == ((c.n,), torch.float32, drift_shape)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(rows=a["rows"].clone().fill_(3)), "distinct"),
        (lambda a: a.update(rows=a["rows"] + 1000), "outside"),
        (lambda a: a.update(block_table=a["block_table"] + 1000), "block_table"),
        (lambda a: a.update(block_table=a["block_table"][:1]), "block_table"),
        (lambda a: a.update(window=a["window"] + 100), "window"),
        (lambda a: a.update(k_new=a["k_new"].double()), "k_new"),
        (lambda a: a.update(prev_q=a["prev_q"][:1]), "prev_q"),
        (lambda a: a.update(q=a["q"][:, :3]), "multiple of Hkv"),
    ],
)
def test_bad_input_is_a_value_error(change, message: str) -> None:
    require_extension()
    args = make_inputs(CASES[0], torch.float32, "cpu")
    change(args)
    with pytest.raises(ValueError, match=message):
        torch.ops.vllm_elastic.elastic_attention(**args, cosine_over_heads=True)
