"""Decoding settings from vLLM, each over the one before: the checkpoint's defaults (the
``"elastic"`` block of its ``generation_config.json``), engine-wide
``additional_config={"elastic": {...}}``, and per request ``SamplingParams.extra_args`` (the OpenAI
server's ``vllm_xargs``), parsed by the core's ``DecodeSettings.from_dict`` so that there is one
set of names, defaults and error messages.

``max_tokens`` is the canvas length (``gen_length``); ``temperature`` and ``seed`` are LLaDA's
Gumbel-max sampling (a request with no seed and a temperature above 0 gets a fresh random seed, as
in vLLM); ``logprobs`` asks the decoder to record them (``core/logprobs.py``). ``extra_args`` may
set ``temperature`` and ``seed`` too, and then they win. Per-request keys override engine-wide
ones. The other ``SamplingParams`` are checked by ``plugin/sampling.py``.
``refresh_budget`` (token rows per step for deferred refreshes, ``plugin/refresh.py``) and
``steps_per_schedule`` (the denoising steps one engine step may run, ``plugin/runner.py``) are
engine-only keys of ``additional_config["elastic"]``; they are not ``DecodeSettings`` fields.
Bad values raise ``ValueError`` in the front end, at submission: ``ElasticSettingsValidator`` is a
no-op vLLM logits processor whose ``validate_params`` hook vLLM calls for every request before it
reaches the engine (the config hook in ``plugin/config.py`` installs it), so one bad request fails
alone and the others in flight never see it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from ..core.settings import SEED_RANGE, DecodeSettings, defaults_from_generation_config
from .sampling import check_sampling_params

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import ModelConfig, VllmConfig

ADDITIONAL_CONFIG_KEY = "elastic"  # additional_config={"elastic": {...}}
VALIDATOR_QUALNAME = "vllm_elastic.plugin.settings:ElasticSettingsValidator"
REFRESH_BUDGET_KEY = "refresh_budget"  # engine-wide only: the scheduler's, not a request's
STEPS_PER_SCHEDULE_KEY = "steps_per_schedule"  # engine-wide only, like refresh_budget
# Denoising steps an engine step may run by default: enough that the engine's round trip between
# steps (scheduling, two RPCs) is paid once for several of a small batch's short steps.
DEFAULT_STEPS_PER_SCHEDULE = 4
ENGINE_ONLY_KEYS = (REFRESH_BUDGET_KEY, STEPS_PER_SCHEDULE_KEY)

# The engine-wide settings of this process's engine, set by the config hook (front-end process),
# read by the submission check. NOTE: one engine per process; a second engine replaces them.
_engine_defaults: DecodeSettings | None = None


def engine_settings(
    additional_config: dict[str, Any] | None, model_config: ModelConfig | None = None
) -> DecodeSettings:
    """Parse ``additional_config["elastic"]`` over the checkpoint's defaults (``model_defaults``;
    raises ValueError with the offending key)."""
    raw = _elastic_config(additional_config)
    if "gen_length" in raw:
        raise ValueError("gen_length is set per request by max_tokens, not in additional_config")
    engine_refresh_budget(additional_config)
    engine_steps_per_schedule(additional_config)
    raw = {k: v for k, v in raw.items() if k not in ENGINE_ONLY_KEYS}
    return DecodeSettings.from_dict(raw, model_defaults(model_config))


def model_defaults(model_config: ModelConfig | None) -> DecodeSettings:
    """The checkpoint's decoding defaults (the ``"elastic"`` block of its generation config), read
    the way vLLM reads its sampling defaults: ``--generation-config auto`` (the default) from the
    model, a folder from there, ``vllm`` none (the authors' defaults)."""
    if model_config is None or model_config.generation_config == "vllm":
        return DecodeSettings()
    source = f"the generation config of {model_config.model}"
    return defaults_from_generation_config(model_config.try_get_generation_config(), source)


def engine_refresh_budget(additional_config: dict[str, Any] | None) -> int | None:
    """``additional_config["elastic"]["refresh_budget"]``: token rows of deferred refresh per
    step (an int >= 1), or None for the default (the step's unused token budget)."""
    value = _elastic_config(additional_config).get(REFRESH_BUDGET_KEY)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{REFRESH_BUDGET_KEY} must be an int >= 1 (token rows), got {value!r}")
    return value


def engine_steps_per_schedule(additional_config: dict[str, Any] | None) -> int:
    """``additional_config["elastic"]["steps_per_schedule"]``: the denoising steps one engine
    step may run (an int >= 1; 1 is one denoising step per engine step)."""
    value = _elastic_config(additional_config).get(
        STEPS_PER_SCHEDULE_KEY, DEFAULT_STEPS_PER_SCHEDULE
    )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{STEPS_PER_SCHEDULE_KEY} must be an int >= 1, got {value!r}")
    return value


def _elastic_config(additional_config: dict[str, Any] | None) -> dict[str, Any]:
    raw = (additional_config or {}).get(ADDITIONAL_CONFIG_KEY) or {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"additional_config[{ADDITIONAL_CONFIG_KEY!r}] must be a dict, got {raw!r}"
        )
    return raw


def request_settings(params: SamplingParams, base: DecodeSettings) -> DecodeSettings:
    """One request's settings: ``base`` overridden by ``extra_args``; gen_length = max_tokens."""
    extra = dict(params.extra_args or {})
    if "gen_length" in extra:
        raise ValueError("set the canvas length with max_tokens, not extra_args['gen_length']")
    for key in ENGINE_ONLY_KEYS:
        if key in extra:
            raise ValueError(
                f"{key} is engine-wide: set it in additional_config[{ADDITIONAL_CONFIG_KEY!r}], "
                "not per request"
            )
    if extra.get("logprobs") is not None:
        raise ValueError("ask for logprobs with the request's logprobs, not extra_args['logprobs']")
    if params.max_tokens is None:
        raise ValueError("max_tokens (the canvas length) is required")
    check_sampling_params(params)
    # NOTE: early_stop is forced on: vLLM finishes a request at its EOS, so decoding past it would
    # be work nobody reads (the core's default, off, keeps the reference samplers' full schedules).
    merged = {
        "temperature": params.temperature,
        "seed": _seed(params, base),
        **extra,
        "gen_length": params.max_tokens,
        "early_stop": True,
        "logprobs": params.logprobs,
    }
    return DecodeSettings.from_dict(merged, base)


def _seed(params: SamplingParams, base: DecodeSettings) -> int:
    """The request's seed; without one, a fresh one when it samples, else the engine's."""
    if params.seed is not None:
        return params.seed
    return random.randint(0, SEED_RANGE[1]) if params.temperature > 0 else base.seed


def set_engine_defaults(vllm_config: VllmConfig) -> DecodeSettings:
    global _engine_defaults
    _engine_defaults = engine_settings(vllm_config.additional_config, vllm_config.model_config)
    return _engine_defaults


class ElasticSettingsValidator(LogitsProcessor):
    """Checks each request's settings at submission; changes no logits."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        request_settings(sampling_params, _engine_defaults or DecodeSettings())

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        pass

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        pass

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits
