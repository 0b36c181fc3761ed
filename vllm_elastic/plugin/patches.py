"""Every change vllm-elastic makes to a vLLM symbol at runtime, one block each.

``apply_prompt_free_detokenizer``
    Why: vLLM detokenizes a request's output in the prompt's context (its ``DecodeStream`` is
        primed with the prompt ids). A tokenizer whose decoder joins tokens with a separator (the
        tiny model's word-level one: ``WordPiece`` decoder, words joined by spaces) then puts the
        separator between the prompt's last token and the first output token into the output:
        ``" 7"`` for the answer ``7``. A client gets text that is not the model's output (a code
        completion that starts indented). LLaDA's own scripts decode the generated ids alone
        (``tokenizer.batch_decode(out[:, prompt_len:])``), and so do we: the text of a completion
        is ``tokenizer.decode(output_ids)``. A byte-level BPE token keeps its own leading space, so
        a model that generates one still returns it.
    How: the detokenizer vLLM picks for a fast tokenizer (``FastIncrementalDetokenizer``) is
        replaced, for the requests of this process, by a subclass whose stream starts empty.
        Applied by the config hook, so only in a process that serves a LLaDA model.
    Upstream: vLLM has no per-model choice of detokenization context.
    Remove when: vLLM lets a model or tokenizer mode choose it.
"""

from __future__ import annotations

import tokenizers.decoders
from vllm.v1.engine import detokenizer

PATCHED_SYMBOL = (detokenizer, "FastIncrementalDetokenizer")  # tests check it still exists


class PromptFreeDetokenizer(detokenizer.FastIncrementalDetokenizer):
    """vLLM's fast incremental detokenizer, its stream not primed with the prompt."""

    def __init__(self, tokenizer, request) -> None:
        super().__init__(tokenizer, request)
        self.stream = tokenizers.decoders.DecodeStream(skip_special_tokens=self.skip_special_tokens)


def apply_prompt_free_detokenizer() -> None:
    """Make ``IncrementalDetokenizer.from_new_request`` build ``PromptFreeDetokenizer``s."""
    module, name = PATCHED_SYMBOL
    if getattr(module, name) is not PromptFreeDetokenizer:
        setattr(module, name, PromptFreeDetokenizer)
