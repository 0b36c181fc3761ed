"""The ``story_signs`` drill masks what the reference sampler leaves masked on a story line: the
step sentence bar its operand, the sign and the result. The step number, both operands and the
final answer line stay given, in characters and in the tokens a batch masks."""

from __future__ import annotations

import random
import re

import pytest

from vllm_elastic.tasks import CANVASES, make_problem, story
from vllm_elastic.train.batches import make_batch
from vllm_elastic.train.bpe import build_tokenizer

LINE = re.compile(r"(Step \d+: )(.*) (\d+) ([+-]) (\d+) = (\d+)")


def _hidden(problem: dict) -> str:
    """The answer with every character of a ``fill`` span as ``#``."""
    answer = problem["response"]
    masked = [False] * len(answer)
    for start, end in problem["fill"]:
        assert 0 <= start < end <= len(answer)
        masked[start:end] = [True] * (end - start)
    return "".join("#" if m else c for c, m in zip(answer, masked))


@pytest.mark.parametrize("canvas", CANVASES)
def test_fill_spans_are_sentence_sign_and_result(canvas):
    steps = set()
    for seed in range(30):
        problem = make_problem("story_signs", random.Random(seed), canvas)
        twin = story.make_problem(random.Random(seed), canvas)  # the same problem, unmasked
        assert problem["response"] == twin["response"] and problem["task"] == "story_signs"
        lines, given = problem["response"].split("\n"), _hidden(problem).split("\n")
        steps.add(len(lines) - 1)
        for want, got in zip(lines[:-1], given):
            head, sentence, a, op, b, result = LINE.fullmatch(want).groups()
            k = sentence.index(f" {b} ") + 1  # the operand inside the sentence
            hidden = "#" * k + b + "#" * (len(sentence) - k - len(b))
            assert got == f"{head}{hidden} {a} # {b} = {'#' * len(result)}", (got, want)
        assert given[-1] == lines[-1]  # "The answer is N." is given
    assert steps == {story.STEPS[canvas]}  # story's own step count


def test_a_batch_masks_the_words_and_the_sign_not_the_operands():
    tokenizer = build_tokenizer(seed=0)
    batch = make_batch(0, 0, 1.0, tokenizer, 4096, set(), only=("story_signs",))
    assert batch.drills and batch.block_start is None
    checked = 0
    for ids, maskable in zip(batch.ids.tolist(), batch.is_response.tolist()):
        tokens = [tokenizer.decode([t]) for t in ids]
        text = "".join(tokens)
        hidden = "".join("#" * len(t) if m else t for t, m in zip(tokens, maskable))
        at = 0
        for line in text.split("\n"):
            m = LINE.fullmatch(line)
            if m:  # an answer line (the prompt's step lines have no sum)
                got = hidden[at : at + len(line)]
                head, sentence, a, op, b, result = m.groups()
                k = len(head) + sentence.index(f" {b} ") + 1
                assert got.startswith(head.rstrip()) and got[k : k + len(b)] == b, got
                assert set(got[len(head) : k - 1] + got[k + len(b) : m.end(2)]) <= {"#"}, got
                assert got[m.start(3) : m.end(3)] == a and got[m.start(5) : m.end(5)] == b, got
                assert got[m.start(4)] == "#" and set(got[m.start(6) :]) == {"#"}, got
                checked += 1
            elif line.startswith(story.ANSWER_PREFIX):
                assert hidden[at : at + len(line)] == line
            at += len(line) + 1
    assert checked >= 2 * len(batch.ids)
