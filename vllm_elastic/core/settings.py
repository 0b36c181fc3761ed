"""Decoding settings of one request, validated with clear errors (offline ValueError, HTTP 400)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .policy import COSINE_MODES, REFRESH_STARTS

METHODS = ("llada", "fastdllm", "elastic")
REMASKING = ("low_confidence", "random")
FASTDLLM_CACHES = ("none", "prefix", "dual")
REFRESH_POLICIES = ("drift", "always", "never")
REFRESH_MODES = ("immediate", "deferred")

OPTIONAL_INTS = ("steps", "tokens_per_step", "max_steps", "logprobs", "full_refresh_every")
DEFAULT_WINDOW = 16  # Elastic-Cache window_length (β)
DEFAULT_THRESHOLD = 0.9  # confidence threshold τ (Elastic-Cache and Fast-dLLM)
DEFAULT_GAMMA = 0.9  # drift threshold γ
DEFAULT_BLOCK_LENGTH = 32  # LLaDA demo and Fast-dLLM block size
ALL_LOGPROBS = -1  # logprobs=-1: every token of the vocabulary is an alternative (as in vLLM)
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
# A checkpoint's own decoding defaults: the "elastic" block of its generation_config.json, where
# Hugging Face checkpoints keep their sampling defaults (vLLM reads the same file for its own).
MODEL_DEFAULTS_FILE = "generation_config.json"
MODEL_DEFAULTS_KEY = "elastic"
# Per request, never a checkpoint's: the canvas is the request's max_tokens, and temperature, seed
# and logprobs are the request's sampling parameters (temperature: the generation config's own key).
PER_REQUEST_KEYS = ("gen_length", "temperature", "seed", "logprobs")


@dataclass(slots=True, frozen=True)
class DecodeSettings:
    method: str = "elastic"
    gen_length: int = 256
    # stop once the answer up to its first EOS is committed (what a serving engine does; the output
    # is unchanged). Off by default: the reference sampler and Fast-dLLM decode every block.
    early_stop: bool = False
    # a cap on the denoising steps of one decode, below the bound its canvas sets (gen_length;
    # llada: its steps). A decode that reaches it ends with the positions still masked left out.
    max_steps: int | None = None
    # elastic (the defaults of the authors' generate_with_elastic_cache)
    window: int = DEFAULT_WINDOW
    threshold: float = DEFAULT_THRESHOLD
    gamma: float = DEFAULT_GAMMA
    track_num: int = 1
    block_caching: bool = True
    tokens_per_step: int | None = None  # elastic/fastdllm: commit the top-k instead of thresholding
    cosine: str = "head"  # "head": the authors' code; "key": the paper's text
    refresh: str = "drift"  # "drift" (Elastic-Cache), "always" (every layer every step), "never"
    # "immediate": refresh inside the forward where the drift test fires (the authors' code);
    # "deferred": the trigger is reported and the refresh runs at the start of the next step
    refresh_mode: str = "immediate"
    # where a triggered refresh starts: "above" the first layer that fired (the authors' code) or
    # at the "first" layer (deferred mode only; policy.REFRESH_STARTS)
    refresh_start: str = "above"
    # also recompute every layer for all N positions on every K-th step, from layer 0 (Fast-dLLM's
    # kind of refresh). A drift refresh starts one layer above the first layer whose test fired,
    # from that layer's cached inputs, so the first layer's outputs outside a step's rows are never
    # recomputed; a model whose shallow states follow the answer needs this (BENCHMARKS §1).
    # None: the authors' algorithm, drift refreshes only.
    full_refresh_every: int | None = None
    # llada reference sampler (generate.py)
    steps: int | None = None  # default: gen_length (one token per step)
    block_length: int = DEFAULT_BLOCK_LENGTH
    temperature: float = 0.0
    remasking: str = "low_confidence"
    seed: int = 0
    # fastdllm
    cache: str = "prefix"
    # record each committed token's log-probability and this many top alternatives, from the
    # step that commits it (core/logprobs.py); -1: the whole vocabulary; None: nothing is recorded
    logprobs: int | None = None

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else self.gen_length

    def block_spans(self) -> list[tuple[int, int]]:
        """The canvas's blocks as (start, end) offsets after the prompt: ``block_length`` each, the
        last one shorter when ``gen_length`` is not a multiple of it."""
        b, g = self.block_length, self.gen_length
        return [(lo, min(lo + b, g)) for lo in range(0, g, b)]

    def llada_block_steps(self) -> list[int]:
        """LLaDA's steps per block: ``steps * len(block) // gen_length``, at least 1 and at most
        ``len(block)`` (a step that commits nothing would only repeat the forward).

        Proportional to the block's length, so a canvas that is a multiple of ``block_length``
        with ``steps`` a multiple of the block count gets the reference's ``steps // num_blocks``
        for every block, and one token per step (steps = gen_length, the default) stays one.
        """
        steps, g = self.num_steps, self.gen_length
        return [min(hi - lo, max(1, steps * (hi - lo) // g)) for lo, hi in self.block_spans()]

    def validate(self) -> "DecodeSettings":
        _choice("method", self.method, METHODS)
        _choice("cosine", self.cosine, COSINE_MODES)
        _choice("refresh", self.refresh, REFRESH_POLICIES)
        _choice("refresh_mode", self.refresh_mode, REFRESH_MODES)
        _choice("refresh_start", self.refresh_start, tuple(REFRESH_STARTS))
        if self.refresh_start == "first" and self.refresh_mode != "deferred":
            raise ValueError(
                "refresh_start 'first' needs refresh_mode 'deferred': the forward whose drift test "
                "fires has already run the layers below it, so the next step refreshes (with "
                "refresh_mode 'immediate', set refresh_start 'above')"
            )
        _choice("remasking", self.remasking, REMASKING)
        _choice("cache", self.cache, FASTDLLM_CACHES)
        if self.gen_length <= 0:
            raise ValueError(f"gen_length must be > 0, got {self.gen_length}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.tokens_per_step is not None and self.tokens_per_step <= 0:
            raise ValueError(f"tokens_per_step must be > 0, got {self.tokens_per_step}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {self.max_steps}")
        if self.full_refresh_every is not None and self.full_refresh_every <= 0:
            raise ValueError(f"full_refresh_every must be > 0, got {self.full_refresh_every}")
        if self.track_num <= 0:
            raise ValueError(f"track_num must be > 0, got {self.track_num}")
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if self.block_length <= 0:
            raise ValueError(f"block_length must be > 0, got {self.block_length}")
        if self.method == "llada" and self.num_steps <= 0:
            raise ValueError(f"llada: steps must be > 0, got {self.num_steps}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}")
        if self.logprobs is not None and self.logprobs < ALL_LOGPROBS:
            raise ValueError(
                f"logprobs must be >= 0 (top alternatives) or {ALL_LOGPROBS} (the whole "
                f"vocabulary), got {self.logprobs}"
            )
        return self

    def replace(self, **changes) -> "DecodeSettings":
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def from_dict(cls, raw: dict, base: "DecodeSettings | None" = None) -> "DecodeSettings":
        """Parse user-supplied values (strings from a CLI or JSON) with a clear error for each."""
        base = base or cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        changes = {}
        for key, value in raw.items():
            if key not in fields:
                raise ValueError(f"unknown setting {key!r}; known: {sorted(fields)}")
            kind = int if key in OPTIONAL_INTS else type(getattr(base, key))
            changes[key] = _coerce(key, value, kind)
        return dataclasses.replace(base, **changes).validate()


def defaults_from_generation_config(config: dict, source: str) -> DecodeSettings:
    """The settings a checkpoint ships: ``config[MODEL_DEFAULTS_KEY]`` (any DecodeSettings field
    but ``PER_REQUEST_KEYS``) over the authors' defaults; the authors' defaults where it is absent.

    How far attention drifts between steps, and so the gamma that keeps a model's answers, is a
    property of the model (the authors' scripts set it per task: 0.9, and 0.98 for HumanEval), so
    it travels with the weights. config: the generation config as a dict; source names it in errors.
    """
    raw = config.get(MODEL_DEFAULTS_KEY) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {MODEL_DEFAULTS_KEY!r} must be a dict, got {raw!r}")
    bad = sorted(set(raw) & set(PER_REQUEST_KEYS))
    if bad:
        raise ValueError(f"{source}: {bad} are set per request, not as a checkpoint's default")
    try:
        return DecodeSettings.from_dict(raw)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def model_defaults(model_dir: str | Path) -> DecodeSettings:
    """``defaults_from_generation_config`` of a checkpoint directory (the authors' defaults for a
    directory without the file, or a name that is not a directory)."""
    path = Path(model_dir) / MODEL_DEFAULTS_FILE
    if not path.is_file():
        return DecodeSettings()
    return defaults_from_generation_config(json.loads(path.read_text()), str(path))


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose from {list(allowed)}")


def _coerce(key: str, value, kind: type):
    if value is None and key in OPTIONAL_INTS:
        return None
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if result != result:  # NaN
                raise ValueError
            return result
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {key!r} must be {kind.__name__}, got {value!r}") from None


def validate_prompt(prompt: list[int], mask_id: int, vocab_size: int) -> None:
    if len(prompt) == 0:
        raise ValueError("the prompt is empty")
    if mask_id in prompt:
        raise ValueError(f"the prompt contains the mask token id {mask_id}")
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt token ids out of range [0, {vocab_size}): {bad[:5]}")
