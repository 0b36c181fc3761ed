"""The test-bed model's tokenizer: a byte-level BPE trained on the task corpus, exact round trip.

``decode(encode(text)) == text`` for any text: bytes are the base alphabet, nothing is normalized,
whitespace (spaces, newlines, indentation) is kept. Digits are always single tokens, so numbers are
read and written digit by digit (the arithmetic of a step stays a per-digit lookup). Special tokens
keep the ids of the first tiny model (BOS 0, EOS = pad 1, mask 2), which ``config.json`` repeats as
``bos_token_id``, ``eos_token_id`` and ``mask_token_id`` for the core and the plugin. Saved in the HF
layout that ``AutoTokenizer.from_pretrained`` loads, with a chat template.
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..tasks import CANVASES, CORPUS_FAMILIES, make_problem

MASK_TOKEN, EOS_TOKEN, BOS_TOKEN = "<|mdm_mask|>", "<|eot_id|>", "<|startoftext|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, *ROLE_TOKENS]  # ids 0, 1, 2, ...
VOCAB_SIZE = 768
CORPUS_PROBLEMS = 600  # per family and canvas
# A user turn, then the assistant turn the model writes. The newlines are part of the format.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus(seed: int = 0, per_cell: int = CORPUS_PROBLEMS) -> list[str]:
    """Prompts (raw and in the chat format) and answers of every sized family at every canvas."""
    rng, texts = random.Random(seed), []
    for family in CORPUS_FAMILIES:
        for canvas in CANVASES:
            for _ in range(per_cell):
                problem = make_problem(family, rng, canvas)
                texts += [problem["prompt"], problem["response"]]
    return texts


def _raw_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(seed: int = 0, vocab_size: int = VOCAB_SIZE):
    """A ``PreTrainedTokenizerFast`` with mask, EOS (= pad) and BOS tokens and a chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = _raw_tokenizer(corpus(seed), vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    ids = [fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), ids  # the ids config.json promises
    return fast


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))


def main() -> None:
    """``python -m vllm_elastic.train.bpe OUT_DIR``: train the tokenizer and save it."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    a = p.parse_args()
    save_tokenizer(build_tokenizer(a.seed, a.vocab_size), a.out)


if __name__ == "__main__":
    main()
