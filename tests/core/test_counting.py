"""The ``counting`` drill: short ``listing`` answers, each with a step across a ten, in the
prompt's range, drawn in drill batches (padded short, never in the block state)."""

from __future__ import annotations

import random
import re

import pytest

from vllm_elastic.tasks import CANVASES, DRILL_FAMILIES, make_problem, score
from vllm_elastic.train.batches import make_batch
from vllm_elastic.train.bpe import build_tokenizer

PROMPT = re.compile(r"List the numbers from (\d+) up to (\d+), one per line, each followed by its "
                    r"digits in words\.")  # fmt: skip
WORDS = "zero one two three four five six seven eight nine".split()


@pytest.mark.parametrize("canvas", CANVASES)
def test_every_answer_counts_across_a_ten_in_the_prompts_range(canvas):
    lengths, hundreds = set(), 0
    for seed in range(300):
        problem = make_problem("counting", random.Random(seed), canvas)
        first, last = PROMPT.fullmatch(problem["prompt"]).groups()
        want = list(range(int(first), int(last) + 1))
        lines = problem["response"].split("\n")
        assert [int(line.split(":")[0]) for line in lines] == want
        for line, n in zip(lines, want):  # listing's line: the number, then its digits in words
            assert line == f"{n}: " + " ".join(WORDS[int(d)] for d in str(n))
        assert any(a // 10 != b // 10 for a, b in zip(want, want[1:])), want
        assert all(100 <= n <= 999 for n in want)
        hundreds += any(a // 100 != b // 100 for a, b in zip(want, want[1:]))
        lengths.add(len(lines))
        assert score(problem["response"], problem) and not score("\n".join(lines[:-1]), problem)
    assert lengths == set(range(3, 9))
    assert hundreds > 10  # crossings of a hundred (299 to 300) are drawn too


def test_counting_is_a_drill_batch():
    assert "counting" in DRILL_FAMILIES
    tokenizer = build_tokenizer(seed=0)
    batch = make_batch(0, 0, 1.0, tokenizer, 2048, set(), block_share=1.0, only=("counting",))
    assert batch.drills and batch.block_start is None
    assert batch.ids.shape[1] < 128  # padded past the longest answer, not to the canvas
    for ids, maskable in zip(batch.ids.tolist(), batch.is_response.tolist()):
        answer = [t for t, m in zip(ids, maskable) if m and t != tokenizer.eos_token_id]
        assert maskable.index(True) + maskable.count(True) == len(ids)  # all of it after the prompt
        lines = tokenizer.decode(answer).split("\n")
        assert 3 <= len(lines) <= 8 and all(re.fullmatch(r"\d{3}: [a-z ]+", x) for x in lines)
