"""Turn a task prompt into model input ids, raw (completions) or through the chat template."""

from __future__ import annotations


def prompt_text(tokenizer, text: str, chat: bool) -> str:
    if not chat:
        return text
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    return tokenizer.encode(prompt_text(tokenizer, text, chat), add_special_tokens=False)
