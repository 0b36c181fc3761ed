"""Prompt checks a LLaDA request needs before it reaches the engine: a 400, not a wasted canvas.

vLLM's renderer (``vllm.renderers``) turns every request into prompt token ids in the front-end
process; it is the one place that sees the prompt's tokens next to the requested ``max_tokens``
(``TokenizeParams.max_output_tokens``, before the OpenAI server clamps ``max_tokens`` to what is
left of ``max_model_len``). ``LLaDARenderer`` is vLLM's HF renderer plus two checks:

- the prompt must not contain the mask token: LLaDA reads it as "a position to fill in", so the
  core decoders refuse such a prompt (``validate_token_ids``: called by vLLM's ``InputProcessor``
  for every prompt, online and offline);
- the canvas (prompt + ``max_tokens``) must fit ``max_model_len``: vLLM's server would silently
  shrink ``max_tokens`` and so change the canvas length, which changes a diffusion model's output
  (``process_for_engine``; a request with no ``max_tokens`` gets vLLM's default, what is left).

vLLM picks a renderer by tokenizer mode; ``register()`` adds the mode ``llada`` (the stock cached HF
tokenizer + this renderer, the way vLLM's own ``inkling`` and ``cohere`` modes only swap the
renderer) and the config hook selects it for ``LLaDAModelLM`` when the user left the mode at
``auto``/``hf``. Both checks raise ``VLLMValidationError``: HTTP 400 with the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.exceptions import VLLMValidationError
from vllm.renderers.hf import HfRenderer


class LLaDARenderer(HfRenderer):
    def validate_token_ids(self, token_ids: Sequence[int], *, parameter: str | None = None) -> None:
        super().validate_token_ids(token_ids, parameter=parameter)
        mask_id = self.model_config.hf_config.mask_token_id
        if parameter is None and mask_id in token_ids:  # parameter None: a prompt's ids
            raise VLLMValidationError(
                f"the prompt contains the mask token{self._mask_text(mask_id)} (id {mask_id}) at "
                f"position {list(token_ids).index(mask_id)}; LLaDA reserves it for the positions "
                "it generates",
                parameter="prompt",
            )

    def process_for_engine(self, prompt, arrival_time, *, tok_params=None, **kwargs):
        engine_input = super().process_for_engine(
            prompt, arrival_time, tok_params=tok_params, **kwargs
        )
        self._check_canvas(engine_input, tok_params)
        return engine_input

    async def process_for_engine_async(self, prompt, arrival_time, *, tok_params=None, **kwargs):
        engine_input = await super().process_for_engine_async(
            prompt, arrival_time, tok_params=tok_params, **kwargs
        )
        self._check_canvas(engine_input, tok_params)
        return engine_input

    def _check_canvas(self, engine_input: Any, tok_params: Any) -> None:
        """prompt + requested max_tokens <= max_model_len (the canvas is never shortened)."""
        ids = engine_input.get("prompt_token_ids") if isinstance(engine_input, dict) else None
        if ids is None or tok_params is None:
            return
        self.validate_token_ids(ids)  # the mask check, before the request is queued
        limit, wanted = tok_params.max_total_tokens, tok_params.max_output_tokens
        if not wanted or limit is None or len(ids) + wanted <= limit:
            return
        name = tok_params.max_output_tokens_param
        raise VLLMValidationError(
            f"{name}={wanted} plus the prompt's {len(ids)} tokens exceeds max_model_len={limit}: "
            f"the canvas holds prompt + {name}; ask for at most {max(limit - len(ids), 0)}",
            parameter=name,
            value=wanted,
        )

    def _mask_text(self, mask_id: int) -> str:
        if self.tokenizer is None:  # skip_tokenizer_init
            return ""
        return " " + repr(self.tokenizer.convert_ids_to_tokens(mask_id))
