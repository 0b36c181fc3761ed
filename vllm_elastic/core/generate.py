"""Batched decoding with any of the three methods: one packed forward per step for all sequences.

A step is three stages, whatever the number of sequences: every decoder plans its part on the host
(``SeqPlan``), one packed forward runs them all (``forward.forward_step``), one batched commit
decides every sequence's tokens and copies the results to the host once (``commit.commit``); each
decoder then advances from its share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from .accounting import ComputeStats
from .commit import SeqResult, commit
from .config import LLaDAConfig
from .decoders.base import DecodeResult, DecodeState
from .decoders.elastic import ElasticState
from .decoders.fastdllm import FastDLLMState
from .decoders.llada import LLaDAState
from .forward import Reduce, forward_step, no_reduce
from .kv_pool import BlockTable, KVPool
from .model import LLaDAModel
from .settings import DecodeSettings, validate_prompt
from .step_batch import SeqPlan

# (model, n, keep_inputs) -> the block table of one sequence's caches; an engine passes its own
# (blocks of its paged storage) through ``new_state``.
CacheFactory = Callable[[LLaDAModel, int, bool], BlockTable]

# method name -> factory(prompt, settings, config, device, cache_factory); a new method is one
# entry here.
DECODERS: dict[str, Callable[..., DecodeState]] = {
    "llada": lambda prompt, s, cfg, dev, caches: LLaDAState(prompt, s, cfg, dev),
    "fastdllm": lambda prompt, s, cfg, dev, caches: FastDLLMState(
        prompt, s, cfg, dev,
        None if s.cache == "none" else caches(len(prompt) + s.gen_length, False),
    ),
    "elastic": lambda prompt, s, cfg, dev, caches: ElasticState(
        prompt, s, cfg, dev, caches(len(prompt) + s.gen_length, True)
    ),
}


def validate_request(cfg: LLaDAConfig, prompt: list[int], settings: DecodeSettings) -> None:
    """Every check a request must pass before decoding (ValueError with the reason)."""
    settings.validate()
    validate_prompt(prompt, cfg.mask_token_id, cfg.embedding_size)
    if len(prompt) + settings.gen_length > cfg.max_sequence_length:
        raise ValueError(
            f"prompt ({len(prompt)}) + gen_length ({settings.gen_length}) exceeds the model's "
            f"max_sequence_length {cfg.max_sequence_length}"
        )


def new_state(
    model: LLaDAModel,
    prompt: list[int],
    settings: DecodeSettings,
    cache_factory: CacheFactory | None = None,
    pool: KVPool | None = None,
) -> DecodeState:
    """Validate one request and build its decoder state (raises ValueError on bad input).

    The state's caches come from ``cache_factory`` (an engine's paged storage), else from
    ``pool``, else from a pool of its own. States step together in one packed forward when their
    caches share one pool (``generate`` makes one for all its prompts).
    """
    validate_request(model.config, prompt, settings)
    device = next(model.parameters()).device
    if cache_factory is None:
        pool = pool if pool is not None else KVPool.for_model(model)

        def cache_factory(model, n, keep_inputs):
            return pool.reserve(n, keep_inputs)

    def caches(n: int, keep_inputs: bool) -> BlockTable:
        return cache_factory(model, n, keep_inputs)

    make = DECODERS[settings.method]
    return make(list(prompt), settings, model.config, device, caches)


@torch.inference_mode()
def step(
    model: LLaDAModel,
    states: Sequence[DecodeState],
    reduce: Reduce = no_reduce,
    grant_all: bool = True,
) -> None:
    """One denoising step for every unfinished state: one packed forward per cache pool.

    ``reduce``: sums head-sharded statistics over a tensor-parallel group (``forward_step``).
    ``grant_all``: every pending deferred refresh runs in this step (no engine budget); an engine
    passes False and calls ``grant_refresh`` itself on the states its scheduler granted.
    """
    active = [s for s in states if not s.done]
    if grant_all:
        for state in active:
            state.grant_refresh()
    for group, pages in _by_pages(active):
        plans = [s.plan() for s in group]
        obs = forward_step(model, plans, pages, reduce)
        results = commit(obs, plans, model.config.mask_token_id)
        for state, plan, result in zip(group, plans, results):
            _account(state.stats, plan, result, model.num_layers)
            state.advance(result)


def _by_pages(states: list[DecodeState]):
    """Group states by the pages their caches live in (states without a cache join any group)."""
    groups: dict[int, tuple[list[DecodeState], object]] = {}
    loose = []
    for s in states:
        if s.cache is None:
            loose.append(s)
            continue
        groups.setdefault(id(s.cache.pages), ([], s.cache.pages))[0].append(s)
    out = list(groups.values())
    if loose:
        if out:
            out[0][0].extend(loose)
        else:
            out.append((loose, None))
    return out


def _account(stats: ComputeStats, plan: SeqPlan, result: SeqResult, num_layers: int) -> None:
    """Compute accounting from what the forward ran (rows per layer, refresh layers)."""
    stats.nfe += 1
    stats.rows_computed += result.rows_computed
    stats.rows_nocache += plan.length * num_layers
    stats.observe_drift(result.similarity, plan.probe.gamma if plan.probe else -math.inf)
    if not plan.first:
        for layer in range(result.refresh_from, num_layers):
            stats.refreshes[layer] += 1


def generate(
    model: LLaDAModel,
    prompts: Sequence[list[int]],
    settings: DecodeSettings | Sequence[DecodeSettings],
    progress: bool = False,
) -> list[DecodeResult]:
    """Decode every prompt; each sequence keeps its own window, cache and refresh layer."""
    if isinstance(settings, DecodeSettings):
        settings = [settings] * len(prompts)
    if len(settings) != len(prompts):
        raise ValueError("one DecodeSettings per prompt, or one for all")
    pool = KVPool.for_model(model)
    states = [new_state(model, p, s, pool=pool) for p, s in zip(prompts, settings)]
    with tqdm(desc="decode", unit="step", disable=not progress) as bar:
        while any(not s.done for s in states):
            step(model, states)
            bar.update(1)
    return [s.result() for s in states]
