"""The runtime patches of ``plugin/patches.py``: the patched symbols still exist where they are
patched, and the patch does what its Why says (no engine needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "llada-tiny"
PROMPT = "Ben has 4 coins. How many coins does Ben have?"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))


def _request(tokenizer):
    from vllm import SamplingParams

    ids = tokenizer(PROMPT)["input_ids"]
    return SimpleNamespace(request_id="r", prompt_token_ids=ids, sampling_params=SamplingParams())


def test_patched_symbol_exists():
    from vllm.v1.engine import detokenizer

    from vllm_elastic.plugin import patches

    module, name = patches.PATCHED_SYMBOL
    assert module is detokenizer and isinstance(getattr(module, name), type)
    # from_new_request looks the class up by this global name at call time
    assert name in detokenizer.IncrementalDetokenizer.from_new_request.__code__.co_names


def test_output_text_is_decoded_without_the_prompt(tokenizer):
    from vllm.v1.engine import detokenizer

    from vllm_elastic.plugin import patches

    output = tokenizer("7 . The answer is 7 .")["input_ids"]
    (vllms,) = patches.PromptFreeDetokenizer.__bases__  # vLLM's, even once the patch is applied
    stock = vllms(tokenizer, _request(tokenizer))
    stock.update(output, False)
    assert stock.output_text.startswith(" ")  # the join between the prompt and the output
    patches.apply_prompt_free_detokenizer()
    patches.apply_prompt_free_detokenizer()  # idempotent
    fresh = detokenizer.IncrementalDetokenizer.from_new_request(tokenizer, _request(tokenizer))
    assert isinstance(fresh, patches.PromptFreeDetokenizer)
    for token in output:  # one token at a time, as a stream arrives
        fresh.update([token], False)
    assert fresh.output_text == tokenizer.decode(output) == "7. The answer is 7."
