"""Which of vLLM's ``SamplingParams`` a diffusion decoder honours, and the refusal of the others.

Honoured: ``temperature`` and ``seed`` (LLaDA's Gumbel-max sampling, ``core/policy.py``), ``n``
(vLLM fans a request out into n requests, each seeded ``seed + i``), ``logprobs`` (recorded at
commit, ``core/logprobs.py``), ``max_tokens`` (the canvas), and what vLLM applies to the committed
prefix as it streams: ``stop``, ``stop_token_ids``, ``include_stop_str_in_output``,
``skip_special_tokens``.

Refused with a ``ValueError`` naming the parameter (HTTP 400), when not at its default: a decoder
that commits many positions of a canvas per step, in any order, does not run vLLM's sampler or
logits processors, so truncation (``top_p``, ``top_k``, ``min_p``), penalties on the tokens so far,
logit biases, allowed and bad words and structured output have nothing to act on; ``min_tokens``
and ``ignore_eos`` would need the canvas to continue past the model's EOS; ``prompt_logprobs``
(what vLLM also asks for on ``echo`` with ``logprobs`` for completions and on any chat
``echo``) would need a likelihood of the prompt, which a
masked diffusion model does not give in one pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm import SamplingParams

# parameter -> (its neutral value, why a diffusion decoder cannot honour another one)
_TRUNCATION = "the decoders sample from the whole distribution (LLaDA's Gumbel-max); no truncation"
_PENALTY = "a diffusion step commits tokens anywhere in the canvas, so there is no 'tokens so far'"
_LOGITS = "the decoders do not run vLLM's logits processors"
NEUTRAL: dict[str, tuple[Any, str]] = {
    "top_p": (1.0, _TRUNCATION),
    "top_k": (0, _TRUNCATION),
    "min_p": (0.0, _TRUNCATION),
    "presence_penalty": (0.0, _PENALTY),
    "frequency_penalty": (0.0, _PENALTY),
    "repetition_penalty": (1.0, _PENALTY),
    "logit_bias": (None, _LOGITS),
    "allowed_token_ids": (None, _LOGITS),
    "bad_words": (None, _LOGITS),
    "structured_outputs": (
        None,
        "response_format / guided decoding constrains tokens left to right; a diffusion decoder "
        "fills the canvas in any order",
    ),
    "min_tokens": (0, "the canvas ends at the model's EOS"),
    "ignore_eos": (False, "the canvas ends at the model's EOS"),
    "prompt_logprobs": (
        None,
        "prompt logprobs, which vLLM also asks for on echo with logprobs (completions) and on "
        "echo (chat), need a likelihood of the prompt, which a masked diffusion model does not "
        "give in one pass",
    ),
    "logprob_token_ids": (None, "only the top-k logprobs are recorded at commit"),
    "watermarking": (None, _LOGITS),
    "thinking_token_budget": (None, _LOGITS),
}
# other spellings of the neutral value
NEUTRAL_ALIASES = {
    "top_k": (-1,), "bad_words": ([],), "logit_bias": ({},), "watermarking": (False,),
}


def check_sampling_params(params: SamplingParams) -> None:
    """Raise ValueError naming the first parameter set to a value the decoders cannot honour."""
    for name, (neutral, why) in NEUTRAL.items():
        value = getattr(params, name, neutral)
        if value == neutral or value in NEUTRAL_ALIASES.get(name, ()):
            continue
        raise ValueError(
            f"{name}={value!r} is not supported by vllm-elastic's diffusion decoders ({why}); "
            f"leave it at {neutral!r}"
        )
