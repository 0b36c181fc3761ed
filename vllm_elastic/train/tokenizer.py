"""The tiny model's word-level tokenizer, saved in the HF format ``AutoTokenizer`` loads.

Words are split on whitespace and every punctuation character stands alone, so ``def f(x): return x*2``
becomes ``def f ( x ) : return x * 2``; decoding joins tokens with spaces (still valid Python) and
glues ``.``/``,``/``?`` back onto the word before them. Integers 0..999 are single tokens.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from ..tasks import FAMILIES

MASK_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN = "<|mdm_mask|>", "<|eot_id|>", "<|startoftext|>", "<|unk|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, UNK_TOKEN, *ROLE_TOKENS]
MAX_NUMBER_TOKEN = 999
EXTRA_WORDS = "def return if else and or not True False None lambda max min abs sum len".split()
# A user turn, then the assistant turn the model writes; no newlines (the pre-tokenizer drops them).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )


def collect_words(samples_per_family: int = 20000, seed: int = 0) -> list[str]:
    """Every word the task generators can emit, plus numbers, punctuation and letters."""
    split = _pre_tokenizer()
    rng, words = random.Random(seed), set()
    for family in FAMILIES.values():
        for _ in range(samples_per_family):
            problem = family.make_problem(rng)
            for text in (problem["prompt"], problem["response"]):
                words.update(w for w, _ in split.pre_tokenize_str(text))
    words.update(str(i) for i in range(MAX_NUMBER_TOKEN + 1))
    words.update(string.punctuation)
    words.update(string.ascii_letters)
    words.update(EXTRA_WORDS)
    return sorted(words)


def build_tokenizer(words: list[str]):
    """A ``PreTrainedTokenizerFast`` with mask, EOS (= pad), BOS and UNK tokens and a chat template."""
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))
