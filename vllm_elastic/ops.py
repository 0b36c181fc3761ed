"""The compiled kernels (``csrc/``) behind one Python wrapper each, their torch twins as fallback.

``vllm_elastic._C`` registers ``torch.ops.vllm_elastic.*`` when the package was built with its
extension (setup.py: the C++ CPU kernels always, the CUDA kernels where nvcc and a CUDA torch are
present). A call goes to the kernel when the extension has one for the tensors' device; otherwise
to the twin in ``core/``, which computes the same (tests/kernels and tests/core hold them equal).

``VLLM_ELASTIC_ATTENTION=torch`` forces the twins (to measure the kernels against them).
"""

from __future__ import annotations

import os

import torch

from .core import page_cells  # a module: page_cells calls back into write_cells
from .core.elastic_attention import elastic_attention_ref, elastic_attention_varlen_ref
from .core.policy import decide_layer

BACKEND_ENV = "VLLM_ELASTIC_ATTENTION"  # "torch": use the twins even when the kernels are built


OP_NAMES = ("elastic_attention", "elastic_attention_varlen")  # CPU and CUDA kernels
# CPU only (their twins elsewhere)
CPU_OP_NAMES = (*OP_NAMES, "elastic_decide", "write_cells")


def _load_extension() -> tuple[bool, bool]:
    """(CPU kernels available, CUDA kernels available): every op of OP_NAMES, so that an extension
    built before an op was added counts as missing (rebuild it) rather than failing a call."""
    try:
        from . import _C  # noqa: F401  (registers torch.ops.vllm_elastic.*)
    except ImportError:
        return False, False
    if not all(hasattr(torch.ops.vllm_elastic, name) for name in CPU_OP_NAMES):
        return False, False
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    ops = [getattr(torch.ops.vllm_elastic, name).default.name() for name in OP_NAMES]
    return True, all(has(op, "CUDA") for op in ops)


HAS_CPU_KERNEL, HAS_CUDA_KERNEL = _load_extension()


def reload_extension() -> None:
    """Look for the extension again (after building it in place in a running process)."""
    global HAS_CPU_KERNEL, HAS_CUDA_KERNEL
    HAS_CPU_KERNEL, HAS_CUDA_KERNEL = _load_extension()


def kernel_for(device: torch.device) -> bool:
    """Whether ``elastic_attention`` on tensors of ``device`` runs the compiled kernel."""
    if os.environ.get(BACKEND_ENV, "").lower() == "torch":
        return False
    return HAS_CUDA_KERNEL if device.type == "cuda" else HAS_CPU_KERNEL and device.type == "cpu"


def elastic_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    rows: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_table: torch.Tensor,
    n: int,
    window: torch.Tensor,
    tracked: torch.Tensor,
    prev_q: torch.Tensor,
    cosine_over_heads: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See ``core.elastic_attention.elastic_attention_ref`` (the same signature and results)."""
    fn = elastic_attention_ref
    # NOTE: with every position new and no statistics there is nothing to read or fuse: the twin is
    # then plain SDPA over the step's own K/V, whose GEMMs beat the kernel's loops (BENCHMARKS §9).
    plain = rows.numel() == n and window.numel() == 0 and prev_q.numel() == 0
    if kernel_for(q.device) and not plain:
        fn = torch.ops.vllm_elastic.elastic_attention
    return fn(
        q, k_new, v_new, rows, key_cache, value_cache, block_table, n, window, tracked, prev_q,
        cosine_over_heads,
    )


def elastic_attention_varlen(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    row_seq: torch.Tensor,
    row_pos: torch.Tensor,
    cu_rows: torch.Tensor,
    max_rows: int,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    max_len: int,
    reads_cache: torch.Tensor,
    window: torch.Tensor,
    tracked: torch.Tensor,
    prev_q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's attention and statistics for a whole batch (the signature and results of
    ``core.elastic_attention.elastic_attention_varlen_ref``)."""
    fn = elastic_attention_varlen_ref
    if kernel_for(q.device) and not _plain_batch(q, reads_cache, window, tracked):
        fn = torch.ops.vllm_elastic.elastic_attention_varlen
    return fn(
        q, k_new, v_new, row_seq, row_pos, cu_rows, max_rows, key_cache, value_cache,
        block_tables, seq_lens, max_len, reads_cache, window, tracked, prev_q,
    )


def elastic_decide(
    mass: torch.Tensor,
    heads_part: torch.Tensor,
    keys_part: torch.Tensor,
    still_masked: torch.Tensor,
    key_invalid: torch.Tensor,
    kept: torch.Tensor,
    pair_invalid: torch.Tensor,
    pair_count: torch.Tensor,
    over_heads: torch.Tensor,
    over_heads_all: int,
    can_test: torch.Tensor,
    defer: torch.Tensor,
    gamma: torch.Tensor,
    refresh_from: torch.Tensor,
    deferred_from: torch.Tensor,
    layer: int,
    num_layers: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's decisions for a whole batch (the signature and results of
    ``core.policy.decide_layer``): the CPU kernel where built, else the twin."""
    fn = decide_layer
    if kernel_for(mass.device) and mass.device.type == "cpu":
        fn = torch.ops.vllm_elastic.elastic_decide
    return fn(
        mass, heads_part, keys_part, still_masked, key_invalid, kept, pair_invalid, pair_count,
        over_heads, over_heads_all, can_test, defer, gamma, refresh_from, deferred_from, layer,
        num_layers,
    )


def write_cells(
    page: torch.Tensor,
    blocks: torch.Tensor,
    offsets: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    flat_cache: dict | None = None,
) -> None:
    """Rows of ``values`` into their cells of ``page`` (the signature of
    ``core.page_cells.write_cells_ref``; ``flat_cache`` serves the twin only): the CPU kernel where
    built, else the twin."""
    if kernel_for(page.device) and page.device.type == "cpu":
        torch.ops.vllm_elastic.write_cells(page, blocks, offsets, rows, values)
        return
    page_cells.write_cells_ref(page, blocks, offsets, rows, values, flat_cache)


def _plain_batch(
    q: torch.Tensor, reads_cache: torch.Tensor, window: torch.Tensor, tracked: torch.Tensor
) -> bool:
    """Every position of every sequence is new and no statistic is asked for: nothing to read or
    fuse, and the twin is padded SDPA over the step's own K/V, whose GEMMs beat the CPU kernel's
    loops (BENCHMARKS §9). Decided on the CPU only, where reading reads_cache costs no sync."""
    if q.device.type != "cpu" or window.shape[1] or tracked.shape[1]:
        return False
    return not bool(reads_cache.any())
