"""Head-sharded statistics: two shards of a random model, reduced, decide as the whole model does.

No vLLM: two threads play two tensor-parallel ranks. Each holds half of every layer's heads (q, k, v
and the attention output's columns, as vLLM's ``QKVParallelLinear`` / ``RowParallelLinear`` cut
them) and per-rank caches; ``ThreadGroup`` is their all-reduce (the engine uses vLLM's TP group).
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from random_llada import random_model, random_prompts
from torch import nn

from vllm_elastic.core import policy
from vllm_elastic.core.accounting import same_stats
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.kv_pool import KVPool
from vllm_elastic.core.model import apply_rope
from vllm_elastic.core.settings import DecodeSettings

WORLD = 2
METHODS = {
    # gammas at which the drift test fires: the refresh layers are compared too
    "elastic-head": {"method": "elastic", "gamma": 0.99, "window": 8},
    "elastic-key": {"method": "elastic", "gamma": 0.99, "cosine": "key", "track_num": 2},
    "fastdllm": {"method": "fastdllm", "cache": "dual"},
    "llada": {"method": "llada", "steps": 16},
}


class ThreadGroup:
    """An all-reduce between threads: the sum in rank order, so every rank gets the same bits."""

    def __init__(self, world: int) -> None:
        self.slots: list[torch.Tensor | None] = [None] * world
        self.barrier = threading.Barrier(world, timeout=120)

    def all_reduce(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t
            self.barrier.wait()
            out = self.slots[0].clone()
            for other in self.slots[1:]:
                out += other
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out

        return reduce


class ShardBlock(nn.Module):
    """Heads [rank H/tp, (rank+1) H/tp) of a core block; the MLP stays whole (replicated)."""

    def __init__(self, block: nn.Module, rank: int, world: int, reduce) -> None:
        super().__init__()
        self.block, self.reduce = block, reduce
        self.n_heads, self.n_kv_heads = block.n_heads // world, block.n_kv_heads // world
        self.head_dim = dh = block.head_dim
        self.q = slice(rank * self.n_heads * dh, (rank + 1) * self.n_heads * dh)
        self.kv = slice(rank * self.n_kv_heads * dh, (rank + 1) * self.n_kv_heads * dh)

    def project_qkv(self, h, rope):
        cos, sin = rope
        b, shape = self.block, h.shape[:-1]
        a = b.attn_norm(h)  # [T, d]
        q = F.linear(a, b.q_proj.weight[self.q]).view(*shape, self.n_heads, self.head_dim)
        k = F.linear(a, b.k_proj.weight[self.kv]).view(*shape, self.n_kv_heads, self.head_dim)
        v = F.linear(a, b.v_proj.weight[self.kv]).view(*shape, self.n_kv_heads, self.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, h, attn):
        b = self.block
        h = h + self.reduce(F.linear(attn, b.attn_out.weight[:, self.q]))  # RowParallel: sum
        n = b.ff_norm(h)
        return h + b.ff_out(F.silu(b.ff_proj(n)) * b.up_proj(n))


class ShardModel(nn.Module):
    """The per-layer interface of ``forward_step`` over one rank's shard of ``model``."""

    def __init__(self, model: nn.Module, rank: int, world: int, reduce) -> None:
        super().__init__()
        self.base, self.config, self.rotary = model, model.config, model.rotary
        self.blocks = nn.ModuleList(ShardBlock(b, rank, world, reduce) for b in model.blocks)
        self.num_layers = model.num_layers

    def embed(self, ids):
        return self.base.embed(ids)

    def logits(self, h):
        return self.base.logits(h)


def sharded_generate(model, prompts, settings: DecodeSettings):
    """Decode on WORLD thread-ranks; per rank: (results, steps, statistics reduces)."""
    group, out, errors = ThreadGroup(WORLD), [None] * WORLD, []

    def run(rank: int) -> None:
        try:
            reduce = group.all_reduce(rank)
            shard = ShardModel(model, rank, WORLD, reduce)
            calls = [0]

            def stats_reduce(t):
                calls[0] += 1
                return reduce(t)

            pool = KVPool.for_model(shard)  # one pool: one packed forward for all sequences
            states = [new_state(shard, p, settings, pool=pool) for p in prompts]
            steps = 0
            while any(not s.done for s in states):
                step(shard, states, stats_reduce)
                steps += 1
            out[rank] = ([s.result() for s in states], steps, calls[0])
        except Exception as exc:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(WORLD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def test_reduced_partials_equal_unsharded_statistics():
    torch.manual_seed(0)
    prev = torch.rand(4, 3, 20).softmax(-1)  # [H, R, N]
    now = torch.rand(4, 3, 20).softmax(-1)
    halves = [slice(0, 2), slice(2, 4)]
    mass = sum(policy.attention_mass_partial(now[h]) for h in halves)
    torch.testing.assert_close(mass, policy.attention_mass_partial(now))
    for mode in policy.COSINE_MODES:
        parts = sum(policy.drift_partials(prev[h], now[h], mode) for h in halves)
        whole = policy.drift_from_partials(parts, mode)
        assert whole == pytest.approx(policy.drift_similarity(prev, now, mode), abs=1e-6)
    manual = F.cosine_similarity(prev, now, dim=0).mean().item()  # the authors' head-axis cosine
    assert policy.drift_similarity(prev, now, "head") == pytest.approx(manual, abs=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_two_head_shards_decide_as_the_whole_model(name):
    model = random_model(seed=2)
    prompts = random_prompts(3, seed=5)
    s = DecodeSettings.from_dict({**METHODS[name], "gen_length": 32, "block_length": 16})
    whole = generate(model, prompts, s)
    (r0, steps, calls0), (r1, _, calls1) = sharded_generate(model, prompts, s)
    assert [r.tokens for r in r0] == [r.tokens for r in r1] == [r.tokens for r in whole]
    assert [r.stats.to_dict() for r in r0] == [r.stats.to_dict() for r in r1]
    assert all(same_stats(a.stats.to_dict(), b.stats.to_dict()) for a, b in zip(r0, whole))
    assert calls0 == calls1 <= steps * model.num_layers  # one statistics reduce per layer at most
    if name.startswith("elastic"):
        assert calls0 > 0 and any(sum(r.stats.refreshes) for r in whole)
