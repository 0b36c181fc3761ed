"""Logprobs recorded at commit time: for every committed token, log_softmax of the logits its
position had in the step that committed it, whatever the method and however many tokens a step
commits."""

from __future__ import annotations

import pytest
import torch
from random_llada import random_prompts

import vllm_elastic.core.generate as generate_module
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.logprobs import committed_logprobs
from vllm_elastic.core.settings import DecodeSettings

TOP_K = 3
METHODS = {
    "llada-partial-block": DecodeSettings(method="llada", gen_length=20, block_length=8, steps=10),
    "fastdllm-partial-block": DecodeSettings(
        method="fastdllm", gen_length=20, block_length=8, threshold=0.3
    ),
    "fastdllm-dual": DecodeSettings(
        method="fastdllm", gen_length=16, block_length=8, cache="dual", threshold=0.3
    ),
    "elastic": DecodeSettings(method="elastic", gen_length=24, threshold=0.3, window=8),
    "elastic-sampled": DecodeSettings(
        method="elastic", gen_length=24, threshold=0.3, temperature=0.7, seed=3
    ),
}


def _decode_watching(model, prompt, settings, monkeypatch):
    """Decode step by step; per step the logits each canvas position had and what it committed
    (read around the batched commit, ``core/commit.py``)."""
    state = new_state(model, prompt, settings)
    seen: dict[int, torch.Tensor] = {}  # canvas position -> its log-softmax in the committing step
    commits_per_step = []
    real = generate_module.commit

    def watched(obs, plans, mask_id):
        results = real(obs, plans, mask_id)
        (plan,), (result,) = plans, results
        rows = plan.logit_rows.tolist()  # canvas positions of the logits rows
        newly = plan.logit_rows[result.keep].tolist()
        commits_per_step.append(len(newly))
        for pos in newly:
            seen[pos] = torch.log_softmax(obs.logits[rows.index(pos)].float(), dim=-1)
        return results

    monkeypatch.setattr(generate_module, "commit", watched)
    while not state.done:
        step(model, [state])
    return state, seen, commits_per_step


@pytest.mark.parametrize("name", list(METHODS))
def test_each_logprob_is_the_commit_steps_log_softmax(model, name, monkeypatch):
    settings = METHODS[name].replace(logprobs=TOP_K)
    prompt = random_prompts(1, seed=11)[0]
    state, seen, per_step = _decode_watching(model, prompt, settings, monkeypatch)
    record = state.logprobs.by_position
    assert sorted(record) == sorted(seen) and seen  # every committed position, and only those
    for pos, logp in seen.items():
        entry = record[pos]
        token = int(state.canvas.x[pos])
        assert entry.token == token
        assert entry.logprob == pytest.approx(float(logp[token]), abs=1e-6)
        top = torch.topk(logp, TOP_K)
        assert entry.top_ids == top.indices.tolist()
        assert entry.top_logprobs == pytest.approx(top.values.tolist(), abs=1e-6)
        assert entry.rank == int((logp > logp[token]).sum()) + 1
    if name.startswith(("fastdllm", "elastic")):
        assert max(per_step) > 1  # several tokens committed in one step


def test_recording_changes_nothing_and_costs_nothing_when_off(model):
    prompts = random_prompts(2, seed=12)
    for settings in METHODS.values():
        plain = generate(model, prompts, settings)
        recorded = generate(model, prompts, settings.replace(logprobs=0))
        assert [r.tokens for r in plain] == [r.tokens for r in recorded]
    assert new_state(model, prompts[0], METHODS["elastic"]).logprobs is None


def test_committed_logprobs_policy():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 1.0]])
    lp, rank, ids, top = committed_logprobs(logits, torch.tensor([1, 2]), 2)
    want = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(lp, torch.stack([want[0, 1], want[1, 2]]))
    assert rank.tolist() == [2, 1] and ids.tolist() == [[0, 1], [2, 3]]
    torch.testing.assert_close(top, want.gather(-1, ids))


def test_seed_makes_sampling_reproducible(model):
    prompts = random_prompts(2, seed=13)
    for method in ("llada", "fastdllm", "elastic"):
        s = DecodeSettings(method=method, gen_length=16, block_length=8, temperature=1.0, seed=5)
        a, b = generate(model, prompts, s), generate(model, prompts, s)
        other = generate(model, prompts, s.replace(seed=6))
        greedy = generate(model, prompts, s.replace(temperature=0.0))
        assert [r.tokens for r in a] == [r.tokens for r in b]
        assert [r.tokens for r in a] != [r.tokens for r in other]
        assert [r.tokens for r in a] != [r.tokens for r in greedy]
