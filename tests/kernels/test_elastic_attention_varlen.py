"""The compiled elastic_attention_varlen op against its torch twin, on fresh random inputs every run.

Each case is a batch of sequences of different lengths and row counts: sequences that read their
cache and sequences that do not (every position in the step's rows, or the twin's zero K/V for the
rest), absent window / tracked rows (-1 at random slots), K = 0 (no drift), a sequence without
rows, grouped-query attention, strided cache views and shuffled block tables whose unused
columns hold garbage ids. Every page cell the op must not read holds NaN (spare blocks, cells past
a sequence's end, the rows' own cells where no drift reads the old keys), and so do the prev_q
rows of absent tracked slots, so a stray read shows as a non-finite output. The seed of each test
is printed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch
from test_elastic_attention import (
    CPU_PATH_ENV,
    CPU_PATHS,
    POISON,
    poison_allocator,
    require_extension,
)

from vllm_elastic import ops
from vllm_elastic.core.accounting import same_stats
from vllm_elastic.core.elastic_attention import elastic_attention_varlen_ref

GARBAGE_BLOCK = 10**6  # block-table entries past a sequence's blocks: must never be used

# (o, stats) tolerances by dtype. The stats are float32 in both paths, from the same rounded inputs.
TOLERANCES = {
    torch.float32: ({"rtol": 1e-5, "atol": 1e-5}, {"rtol": 1e-4, "atol": 1e-6}),
    torch.bfloat16: ({"rtol": 2e-2, "atol": 2e-2}, {"rtol": 1e-3, "atol": 1e-5}),
    torch.float16: ({"rtol": 5e-3, "atol": 5e-3}, {"rtol": 1e-3, "atol": 1e-5}),
}


@dataclass(frozen=True)
class Case:
    """One batch: per sequence its length, computed rows, whether it reads its cache and its
    present window / tracked rows (padded to the largest with -1 at random slots)."""

    name: str
    lens: tuple[int, ...]
    rows: tuple[int, ...]
    reads: tuple[bool, ...]
    windows: tuple[int, ...]
    tracked: tuple[int, ...]
    H: int = 4
    Hkv: int = 2
    dh: int = 64
    bs: int = 16
    strided: bool = False
    extra_len: int = 0  # max_len beyond the longest sequence
    extra_rows: int = 0  # max_rows beyond the largest row count


CASES = [
    Case("three_seqs", (37, 100, 20), (6, 9, 20), (True, True, False), (3, 0, 5), (2, 1, 1)),
    Case(
        "gqa_dh80_strided",
        (50, 33, 64),
        (5, 1, 12),
        (True,) * 3,
        (4, 1, 2),
        (1, 0, 2),
        H=8,
        dh=80,
        bs=32,
        strided=True,
        extra_len=3,
        extra_rows=2,
    ),
    Case("no_drift_k0", (40, 70, 17), (4, 16, 17), (True, True, False), (2, 5, 3), (0, 0, 0)),
    Case("one_seq_elastic_step", (300,), (48,), (True,), (16,), (1,), H=8, bs=32, strided=True),
    Case("all_full_no_cache", (20, 24), (20, 24), (False, False), (5, 0), (0, 0), H=4, Hkv=4),
    Case("no_cache_partial", (30, 26), (10, 26), (False, True), (2, 3), (1, 2)),
    Case("seq_without_rows", (40, 16, 45), (0, 4, 7), (True,) * 3, (0, 2, 3), (0, 1, 2)),
    # sequences of 80 and 90 rows beside one of 6: long GEMMs, mass and drift over many rows
    Case("gemm_rows_mha", (120, 90, 40), (80, 90, 6), (True, False, True), (8, 4, 2), (2, 0, 1),
         H=4, Hkv=4),
    Case(
        "many_seqs_mqa",
        (64, 9, 33, 128, 1, 50),
        (20, 9, 3, 20, 1, 20),
        (True, False) * 3,
        (4, 2, 0, 6, 1, 3),
        (1, 0, 2, 1, 1, 0),
        H=4,
        Hkv=1,
        dh=32,
        bs=8,
    ),
]


def _slots(present: int, width: int, values: list[int]) -> list[int]:
    """``values`` at random slots of a row of ``width``, -1 elsewhere."""
    out = [-1] * width
    for slot, v in zip(random.sample(range(width), present), values):
        out[slot] = v
    return out


def _pages(c: Case, num_blocks: int, dtype, device):
    shape = (num_blocks, c.Hkv, c.bs, c.dh)
    if c.strided:  # the two halves of one [nb, Hkv, 2 * bs, dh] page, as vLLM's CPU layout
        page = torch.full((num_blocks, c.Hkv, 2 * c.bs, c.dh), POISON, device=device, dtype=dtype)
        return page[:, :, : c.bs], page[:, :, c.bs :]
    return tuple(torch.full(shape, POISON, device=device, dtype=dtype) for _ in range(2))


def make_inputs(c: Case, dtype: torch.dtype, device: str) -> dict:
    """Random inputs of one case; NaN wherever the op must not read."""
    R = len(c.lens)
    W, K = max(c.windows), max(c.tracked)
    nblk = [-(-n // c.bs) if r else 0 for n, r in zip(c.lens, c.reads)]
    num_blocks = sum(nblk) + 3 if any(c.reads) else 0  # spare blocks: NaN, never in a table
    ids = torch.randperm(num_blocks).tolist()
    max_blocks = max(-(-n // c.bs) for n in c.lens) + 1  # + a column of garbage for everyone
    tables = [[GARBAGE_BLOCK] * max_blocks for _ in range(R)]
    key_cache, value_cache = _pages(c, num_blocks, dtype, device)
    cu, row_seq, row_pos, window, tracked = [0], [], [], [], []
    for s, (n, t) in enumerate(zip(c.lens, c.rows)):
        pos = torch.randperm(n)[:t].tolist()
        row0 = cu[-1]
        cu.append(row0 + t)
        row_seq += [s] * t
        row_pos += pos
        rows = random.sample(range(row0, row0 + t), max(c.windows[s], c.tracked[s]))
        window.append(_slots(c.windows[s], W, rows[: c.windows[s]]))
        tracked.append(_slots(c.tracked[s], K, rows[: c.tracked[s]]))
        if not c.reads[s]:
            continue
        tables[s][: nblk[s]] = [ids.pop() for _ in range(nblk[s])]
        blocks = torch.tensor(tables[s][: nblk[s]], device=device)
        p = torch.arange(n, device=device)
        for cache in (key_cache, value_cache):
            cache[blocks[p // c.bs], :, p % c.bs] = torch.randn(n, c.Hkv, c.dh).to(device, dtype)
            if c.tracked[s] == 0:  # no drift reads the old keys: the rows' cells are never read
                q_pos = torch.tensor(pos, dtype=torch.long, device=device)
                cache[blocks[q_pos // c.bs], :, q_pos % c.bs] = POISON
    T = cu[-1]
    prev_q = 2 * torch.randn(R, K, c.H, c.dh)
    prev_q[torch.tensor(tracked).reshape(R, K) < 0] = POISON  # absent slots are never read
    idx = random.choice([torch.int32, torch.int64])  # the op takes either index dtype

    def index(values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype, device=device)

    return {
        "q": 2 * torch.randn(T, c.H, c.dh).to(device, dtype),  # x2: peakier softmaxes
        "k_new": torch.randn(T, c.Hkv, c.dh).to(device, dtype),
        "v_new": torch.randn(T, c.Hkv, c.dh).to(device, dtype),
        "row_seq": index(row_seq),
        "row_pos": index(row_pos),
        "cu_rows": index(cu),
        "max_rows": max(c.rows) + c.extra_rows,
        "key_cache": key_cache,
        "value_cache": value_cache,
        "block_tables": index(tables, idx),
        "seq_lens": index(list(c.lens)),
        "max_len": max(c.lens) + c.extra_len,
        "reads_cache": index(list(c.reads), torch.bool),
        "window": index(window).reshape(R, W),
        "tracked": index(tracked).reshape(R, K),
        "prev_q": prev_q.to(device, dtype),
    }


def check_parity(c: Case, dtype: torch.dtype, device: str) -> None:
    seed = random.randrange(2**31)
    print(f"case={c.name} dtype={dtype} seed={seed}")
    torch.manual_seed(seed)
    random.seed(seed)
    args = make_inputs(c, dtype, device)
    ref = elastic_attention_varlen_ref(**args)
    poison_allocator(device, args["q"].numel() + 4 * args["seq_lens"].numel() * args["max_len"])
    got = torch.ops.vllm_elastic.elastic_attention_varlen(**args)
    tol_o, tol_stats = TOLERANCES[dtype]
    names = ("o", "mass", "heads", "keys")
    for name, g, r, tol in zip(names, got, ref, (tol_o, tol_stats, tol_stats, tol_stats)):
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, g.shape, r.dtype, r.shape)
        assert torch.isfinite(g).all(), f"{name} has non-finite elements (seed {seed})"
        torch.testing.assert_close(
            g, r, **tol, msg=lambda m, name=name: f"{name}: {m} (seed {seed})"
        )


DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"]
)
CASE_IDS = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


@CASE_IDS
@DTYPES
@CPU_PATHS
def test_cpu_matches_twin(monkeypatch, case: Case, dtype: torch.dtype, cpu_path: str) -> None:
    require_extension()
    monkeypatch.setenv(CPU_PATH_ENV, cpu_path)
    check_parity(case, dtype, "cpu")


@pytest.mark.gpu
@CASE_IDS
@DTYPES
def test_cuda_matches_twin(case: Case, dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA kernel runs from benchmarks/gpu_check.py on a GPU")
    require_extension()
    op = torch.ops.vllm_elastic.elastic_attention_varlen.default
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CUDA"), (
        "the extension was built without its CUDA kernel on a CUDA machine"
    )
    check_parity(case, dtype, "cuda")


def test_meta_shapes() -> None:
    """The Meta kernel (torch.compile's fake tensors) gives the shapes and dtypes of the CPU op."""
    require_extension()
    c = CASES[1]
    args = make_inputs(c, torch.bfloat16, "cpu")
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in args.items()}
    got = torch.ops.vllm_elastic.elastic_attention_varlen(**meta)
    want = torch.ops.vllm_elastic.elastic_attention_varlen(**args)
    assert [(g.shape, g.dtype) for g in got] == [(w.shape, w.dtype) for w in want]
    R, K, n = len(c.lens), max(c.tracked), args["max_len"]
    assert [tuple(g.shape) for g in got[1:]] == [(R, n), (3, R, K, n), (2, R)]


def test_dispatch_follows_the_backend_switch(monkeypatch) -> None:
    """ops.elastic_attention_varlen runs the compiled op (which checks its indices) unless
    VLLM_ELASTIC_ATTENTION=torch picks the twin (which does not)."""
    require_extension()
    args = make_inputs(CASES[0], torch.float32, "cpu")
    args["row_pos"][1] = args["row_pos"][0]  # a repeated position of sequence 0
    with pytest.raises(ValueError, match="distinct"):
        ops.elastic_attention_varlen(**args)
    monkeypatch.setenv(ops.BACKEND_ENV, "torch")
    ops.elastic_attention_varlen(**args)  # the twin: no value checks


def test_plain_batch_goes_to_the_twin() -> None:
    """No cache read and no statistics on the CPU: the twin's SDPA (no index checks) runs."""
    require_extension()
    args = make_inputs(CASES[4], torch.float32, "cpu")  # every sequence computes all its rows
    args["window"], args["tracked"] = args["window"][:, :0], args["tracked"][:, :0]
    args["prev_q"] = args["prev_q"][:, :0]
    args["row_pos"][1] = args["row_pos"][0]
    ops.elastic_attention_varlen(**args)
    args["window"] = torch.full((2, 1), -1)  # an (absent) window slot: the kernel, which checks
    with pytest.raises(ValueError, match="distinct"):
        ops.elastic_attention_varlen(**args)


def _set(key, fn):
    return lambda a: a.update({key: fn(a[key])})


def _at(t: torch.Tensor, index, value) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


BAD_INPUTS = [
    (_set("row_pos", lambda t: _at(t, 1, t[0])), "distinct"),
    (_set("row_pos", lambda t: _at(t, 0, 37)), "row_pos"),
    (_set("row_seq", lambda t: _at(t, 0, 1)), "row_seq"),
    (_set("cu_rows", lambda t: _at(t, -1, t[-1] - 1)), "cu_rows"),
    (_set("block_tables", lambda t: _at(t, (0, 0), 10**5)), "block_tables"),
    (_set("block_tables", lambda t: t[:, :1]), "block_tables"),
    (_set("window", lambda t: _at(t, (0, 0), 10)), "window"),  # a row of sequence 1
    (_set("tracked", lambda t: _at(t, (1, 0), -2)), "tracked"),
    (_set("max_len", lambda n: 50), "max_len"),
    (_set("max_rows", lambda n: 5), "max_rows"),
    (_set("k_new", lambda t: t.double()), "k_new"),
    (_set("prev_q", lambda t: t[:, :1]), "prev_q"),
    (_set("reads_cache", lambda t: t.long()), "reads_cache"),
    (_set("seq_lens", lambda t: t[:2]), "cu_rows"),
    (_set("q", lambda t: t[:, :3]), "multiple of Hkv"),
]


@pytest.mark.parametrize("change, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_a_value_error(change, message: str) -> None:
    require_extension()
    random.seed(0)
    torch.manual_seed(0)
    args = make_inputs(CASES[0], torch.float32, "cpu")
    change(args)
    with pytest.raises(ValueError, match=message):
        torch.ops.vllm_elastic.elastic_attention_varlen(**args)


GENERATE_SETTINGS = [
    {"method": "elastic", "gamma": 0.999},  # some drift tests fire, some pass
    {"method": "elastic", "gamma": 0.999, "cosine": "key", "refresh_mode": "deferred"},
    {"method": "fastdllm"},  # llada is left out: its batches are plain (the twin either way)
]


@pytest.mark.parametrize("extra", GENERATE_SETTINGS, ids=lambda e: "-".join(map(str, e.values())))
def test_generate_same_tokens_with_kernel_and_twin(monkeypatch, extra: dict) -> None:
    """A batched decode (float32, GQA) gives the same tokens and statistics through the forward's
    ops.elastic_attention_varlen with the compiled op as with the twin."""
    require_extension()
    from vllm_elastic.core.config import LLaDAConfig
    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.model import LLaDAModel
    from vllm_elastic.core.settings import DecodeSettings

    torch.manual_seed(0)
    vocab = 64
    cfg = LLaDAConfig(
        d_model=128,
        n_heads=4,
        n_kv_heads=2,
        n_layers=3,
        mlp_hidden_size=192,
        vocab_size=vocab,
        embedding_size=vocab,
        max_sequence_length=256,
        mask_token_id=vocab - 1,
        eos_token_id=vocab - 2,
        pad_token_id=vocab - 2,
    )
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():  # sharper logits: commits vary in confidence
        model.transformer["ff_out"].weight.mul_(8.0)
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab - 2) for _ in range(rng.randint(3, 30))] for _ in range(3)]
    settings = DecodeSettings(gen_length=32, **extra)
    assert ops.kernel_for(torch.device("cpu"))
    got = generate(model, prompts, settings)
    monkeypatch.setenv(ops.BACKEND_ENV, "torch")
    want = generate(model, prompts, settings)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert all(same_stats(g.stats.to_dict(), w.stats.to_dict()) for g, w in zip(got, want))
    if extra["method"] == "elastic":  # the drift test fired: refreshes ran on the op's statistics
        assert sum(sum(r.stats.refreshes) for r in got) > 0
