"""Batched decoding with any of the three methods: one packed forward per step for all sequences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from .cache import CacheFactory, LayerCache
from .decoders.base import DecodeResult, DecodeState
from .decoders.elastic import ElasticState
from .decoders.fastdllm import FastDLLMState
from .decoders.llada import LLaDAState
from .forward import Reduce, forward_plans, no_reduce
from .config import LLaDAConfig
from .model import LLaDAModel
from .settings import DecodeSettings, validate_prompt

# method name -> factory(prompt, settings, config, device, model, cache_factory); a new method is
# one entry here.
DECODERS: dict[str, Callable[..., DecodeState]] = {
    "llada": lambda prompt, s, cfg, dev, model, cache_factory: LLaDAState(prompt, s, cfg, dev),
    "fastdllm": FastDLLMState,
    "elastic": ElasticState,
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
    cache_factory: CacheFactory = LayerCache.allocate,
) -> DecodeState:
    """Validate one request and build its decoder state (raises ValueError on bad input).

    ``cache_factory`` builds the state's per-layer caches (an engine's paged storage, for one).
    """
    validate_request(model.config, prompt, settings)
    device = next(model.parameters()).device
    make = DECODERS[settings.method]
    return make(list(prompt), settings, model.config, device, model, cache_factory)


@torch.inference_mode()
def step(
    model: LLaDAModel,
    states: Sequence[DecodeState],
    reduce: Reduce = no_reduce,
    grant_all: bool = True,
) -> None:
    """One denoising step for every unfinished state, in one packed forward.

    ``reduce``: sums head-sharded statistics over a tensor-parallel group (``forward_plans``).
    ``grant_all``: every pending deferred refresh runs in this step (no engine budget); an engine
    passes False and calls ``grant_refresh`` itself on the states its scheduler granted.
    """
    active = [s for s in states if not s.done]
    if not active:
        return
    if grant_all:
        for state in active:
            state.grant_refresh()
    logits = forward_plans(model, [s.plan() for s in active], reduce)
    for state, lg in zip(active, logits):
        state.advance(lg)


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
    states = [new_state(model, p, s) for p, s in zip(prompts, settings)]
    with tqdm(desc="decode", unit="step", disable=not progress) as bar:
        while any(not s.done for s in states):
            step(model, states)
            bar.update(1)
    return [s.result() for s in states]
