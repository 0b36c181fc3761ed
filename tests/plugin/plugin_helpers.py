"""Shared by the plugin tests: a small random LLaDA checkpoint and the core's expected output.

The checkpoint is written in the real HF layout (head_dim 64: a head size vLLM's CPU attention
accepts), with weights scaled so that outputs vary and some requests end on EOS.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import torch

from vllm_elastic.core.checkpoint import save_model
from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.generate import generate, new_state, step
from vllm_elastic.core.model import LLaDAModel
from vllm_elastic.core.settings import DecodeSettings

MASK_ID, EOS_ID, VOCAB = 63, 6, 64
GEN_LENGTH = 32
ENGINE_WIDE = {"block_length": 16}  # additional_config={"elastic": ENGINE_WIDE}
# the checkpoint's own defaults (its generation_config.json): under ENGINE_WIDE (block_length) and
# under a request's extra_args (every METHODS entry but elastic-track2 sets its window)
CHECKPOINT_DEFAULTS = {"window": 12, "block_length": 8}
PROMPTS = [[(7 * i + 3 * j) % 60 for j in range(n)] for i, n in enumerate([3, 9, 17, 5, 26, 12])]
METHODS = {
    "elastic": {"method": "elastic", "gamma": 0.9, "window": 8, "threshold": 0.9},
    "elastic-track2": {"method": "elastic", "gamma": 0.95, "track_num": 2, "block_caching": False},
    # gamma 0.99: the drift test fires at both upper layers of this checkpoint (refreshes deferred)
    "elastic-deferred": {"method": "elastic", "gamma": 0.99, "window": 8, "refresh_mode": "deferred"},
    # the same, each refresh recomputing every layer from layer 0
    "elastic-first-layer": {
        "method": "elastic", "gamma": 0.99, "window": 8, "refresh_mode": "deferred",
        "refresh_start": "first",
    },
    "fastdllm": {"method": "fastdllm", "cache": "dual", "threshold": 0.8},
    "llada": {"method": "llada", "steps": 16},
}


def make_llm(checkpoint, **overrides):
    """A float32, eager vLLM engine on ``checkpoint`` with the tests' defaults, KV space 1 GiB."""
    from vllm import LLM

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    args = {"model": str(checkpoint), "skip_tokenizer_init": True, "dtype": "float32",
            "enforce_eager": True, "max_model_len": 256, "max_num_seqs": 8}  # fmt: skip
    return LLM(**{**args, **overrides})


def write_checkpoint(directory) -> None:
    torch.manual_seed(0)
    cfg = LLaDAConfig(
        d_model=128,
        n_heads=2,
        n_kv_heads=2,
        n_layers=3,
        mlp_hidden_size=256,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        rope_theta=10000.0,
        max_sequence_length=512,
        mask_token_id=MASK_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():  # sharper attention and logits than the default init: varied outputs
        for block in model.blocks:
            block.attn_out.weight.mul_(4.0)
            block.q_proj.weight.mul_(3.0)
            block.k_proj.weight.mul_(3.0)
        model.transformer["wte"].weight.mul_(3.0)
        model.transformer["ff_out"].weight.mul_(6.0)
    save_model(model, directory)
    config = {"elastic": CHECKPOINT_DEFAULTS}
    (Path(directory) / "generation_config.json").write_text(json.dumps(config))


def settings_for(extra) -> DecodeSettings:
    """The core settings a request with ``extra_args=extra`` gets from the test engines."""
    base = DecodeSettings.from_dict(ENGINE_WIDE, DecodeSettings.from_dict(CHECKPOINT_DEFAULTS))
    return DecodeSettings.from_dict({**extra, "gen_length": GEN_LENGTH}, base)


def expected(model, prompts, extra) -> list[tuple[list[int], str]]:
    s = settings_for(extra)
    # the plugin hands out the EOS that ends a request; the core's result stops before it
    return [
        (r.tokens + [EOS_ID], "stop") if r.finished_by_eos else (r.tokens, "length")
        for r in generate(model, prompts, s)
    ]


def expected_one_grant_per_step(model, prompts, extra) -> list[tuple[list[int], str]]:
    """``expected`` when the engine grants one deferred refresh per step: the longest-waiting
    pending one, ties to the earliest request (``plugin/refresh.py``); all prompts start together
    and a request leaves the batch once its answer is committed (the plugin's early stop)."""
    s = settings_for(extra).replace(early_stop=True)
    states = [new_state(model, p, s) for p in prompts]
    while any(not st.done for st in states):
        pending = [i for i, st in enumerate(states) if not st.done and st.pending_refresh()]
        if pending:
            oldest = min(pending, key=lambda i: (-states[i].pending_refresh().waited, i))
            states[oldest].grant_refresh()
        step(model, states, grant_all=False)
    results = [st.result() for st in states]
    return [(r.tokens + [EOS_ID], "stop") if r.finished_by_eos else (r.tokens, "length") for r in results]


def core_stats(model, prompts, extra) -> list[dict]:
    """The core decoder's ComputeStats.to_dict() per prompt, for the settings ``expected`` uses."""
    return [r.stats.to_dict() for r in generate(model, prompts, settings_for(extra))]


def step_until_done(engine, on_step=None) -> dict[str, tuple[list[int], str]]:
    """Step an LLMEngine until no request is left: request id -> (token ids, finish reason).

    ``on_step`` (no arguments) runs after every engine step, e.g. to sample the worker's state.
    """
    finished = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = (
                    list(out.outputs[0].token_ids),
                    out.outputs[0].finish_reason,
                )
        if on_step is not None:
            on_step()
    return finished


_REQUEST_IDS = itertools.count()


def generate_together(llm, prompts, params) -> list:
    """``llm.generate`` with every request admitted in the same step: the engine core is paused
    while they are added (it steps as soon as a request arrives, so on a busy machine the first
    ones would otherwise start a step or more ahead). Finished ``RequestOutput``s, prompt order."""
    engine = llm.llm_engine
    ids = [f"together-{next(_REQUEST_IDS)}" for _ in prompts]
    engine.engine_core.call_utility("pause_scheduler", "keep", False)
    try:
        for req_id, prompt in zip(ids, prompts):
            engine.add_request(req_id, {"prompt_token_ids": prompt}, params)
    finally:
        engine.engine_core.call_utility("resume_scheduler")
    finished = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    return [finished[req_id] for req_id in ids]
