"""The per-layer caches live in vLLM's paged KV blocks: parity, block accounting, the bytes.

Blocks of 32 tokens, so every canvas spans two or three blocks, handed out interleaved between the
requests of a batch. One engine for the module, with the engine core in this process (the worker
still runs in its own): ``engine.step()`` is then exactly one scheduler step, and the scheduler's
block pool can be read directly.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")

import torch
from plugin_helpers import (
    ENGINE_WIDE,
    GEN_LENGTH,
    METHODS,
    PROMPTS,
    expected,
    make_llm,
    step_until_done,
)

BLOCK_SIZE = 32
LONG_PROMPT = [(5 * j + 1) % 60 for j in range(40)]  # its prompt alone spans two blocks
INPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


@pytest.fixture(scope="module")
def paged_llm(checkpoint):
    from vllm import envs

    os.environ[INPROC_ENV] = "0"
    try:
        engine = make_llm(
            # one denoising step per engine step: a test reads the caches after the first
            checkpoint, block_size=BLOCK_SIZE,
            additional_config={"elastic": {**ENGINE_WIDE, "steps_per_schedule": 1}},
        )
    finally:  # an in-process engine core caches vLLM's env vars: undo both for later modules
        os.environ.pop(INPROC_ENV)
        envs.disable_envs_cache()
    yield engine
    del engine


def _free_blocks(llm) -> int:
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    return scheduler.kv_cache_manager.block_pool.get_num_free_blocks()


@pytest.mark.parametrize("name", ["elastic", "elastic-track2", "fastdllm"])
def test_parity_with_multi_block_canvases(paged_llm, reference_model, name):
    from vllm import SamplingParams

    prompts = [*PROMPTS, LONG_PROMPT]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(METHODS[name]))
    outs = paged_llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    got = [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs]
    assert got == expected(reference_model, prompts, METHODS[name])


def test_caches_live_in_vllm_kv_tensors(paged_llm, reference_model):
    """After the first step, layer 0 of vLLM's KV tensor holds the core's K, V, q and input x of
    every canvas position (prompt and masks), in the request's blocks, in vLLM's CPU page layout."""
    from vllm import SamplingParams

    engine, extra = paged_llm.llm_engine, METHODS["elastic"]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    engine.add_request("probe", {"prompt_token_ids": LONG_PROMPT}, params)
    engine.step()  # step 0: a full forward over the canvas
    (got,) = paged_llm.collective_rpc("elastic_kv_blocks", args=("probe", 0))
    n = len(LONG_PROMPT) + GEN_LENGTH
    assert len(got["block_ids"]) * BLOCK_SIZE >= n  # the whole canvas got blocks in step 0
    assert 0 not in got["block_ids"]  # vLLM's null block
    k, v = _positions(got["attn"], n)  # [N, Hkv, dh]
    q, x = _positions(got["refresh_state"], n)  # [N, H, dh]
    want = _core_layer0(
        reference_model, LONG_PROMPT + [reference_model.config.mask_token_id] * GEN_LENGTH
    )
    for name, value in zip(("k", "v", "q", "x"), (k, v, q, x.flatten(1))):
        torch.testing.assert_close(value, want[name], msg=lambda m, name=name: f"{name}: {m}")
    step_until_done(engine)


def _positions(blocks: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, bs, 2 dh] read the way vLLM's CPU attention kernel reads a page -> [n, H, dh] x 2."""
    num_blocks, heads, bs, cell = blocks.shape
    keys, values = blocks.view(num_blocks, heads, 2 * bs, cell // 2).chunk(2, dim=2)

    def by_position(t: torch.Tensor) -> torch.Tensor:  # [B, H, bs, dh] -> [n, H, dh]
        return t.permute(0, 2, 1, 3).reshape(num_blocks * bs, heads, -1)[:n]

    return by_position(keys), by_position(values)


@torch.inference_mode()
def _core_layer0(model, ids: list[int]) -> dict[str, torch.Tensor]:
    ids_t = torch.tensor(ids)
    h = model.embed(ids_t)  # [N, d]
    rope = model.rotary(torch.arange(len(ids)))
    q, k, v = model.blocks[0].project_qkv(h, rope)  # [N, H, dh], [N, Hkv, dh] x 2
    return {"k": k, "v": v, "q": q, "x": h}


def test_blocks_return_to_the_pool_after_finish_and_abort(paged_llm, reference_model):
    from vllm import SamplingParams

    engine, extra = paged_llm.llm_engine, METHODS["elastic"]
    params = SamplingParams(max_tokens=GEN_LENGTH, temperature=0.0, extra_args=dict(extra))
    start = _free_blocks(paged_llm)
    prompts = [*PROMPTS[:3], LONG_PROMPT]
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", {"prompt_token_ids": prompt}, params)
    engine.step()  # all four admitted, each with the blocks of its whole canvas
    canvases = [-(-(len(p) + GEN_LENGTH) // BLOCK_SIZE) for p in prompts]
    assert start - _free_blocks(paged_llm) == sum(canvases)
    engine.abort_request(["r3"])
    assert start - _free_blocks(paged_llm) == sum(canvases[:3])
    finished = step_until_done(engine)
    assert [finished[f"r{i}"] for i in range(3)] == expected(reference_model, PROMPTS[:3], extra)
    assert _free_blocks(paged_llm) == start
    engine.step()  # the worker hears of the last finished requests with the next scheduler step
    (info,) = paged_llm.collective_rpc("elastic_info")
    assert info["live_decodes"] == 0
